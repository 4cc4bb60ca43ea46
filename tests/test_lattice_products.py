"""The CPU's CSR products (few channels) against embedding_bag's gathers (the reference):
same filtering up to float32 rounding, independent of the thread count, and lattices with
CSR matrices made still copy and pickle."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import deepcrf.lattice as lattice_module
from deepcrf.lattice import build_lattice, stack_lattices


def _stack(n: int = 2000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    grid = build_lattice(torch.rand(n, 2, generator=g) * 9)
    bilateral = build_lattice(torch.rand(n, 5, generator=g) * 4)
    scales = torch.rand(n, generator=g) + 0.5
    return stack_lattices([grid.scale(scales, scales * 3), bilateral.scale(scales, scales)]), g


def _every_operation(lattice, values, vertex_values, add):
    return {
        "filter": lattice.filter(values),
        "filter_add": lattice.filter_add(values, add),
        "splat": lattice.splat_values(values),
        "blur": lattice.blur(vertex_values),
        "blur transposed": lattice.blur(vertex_values, transpose=True),
        "slice": lattice.slice_values(vertex_values),
        "slice add": lattice.slice_values(vertex_values, add=add),
    }


def _product_widths(monkeypatch) -> list[int]:
    """The dense widths of every CSR product from now on (``_csr_mm`` spied on)."""
    widths = []
    original = lattice_module._csr_mm

    def spy(matrix, dense, out=None):
        widths.append(dense.shape[1])
        return original(matrix, dense, out)

    monkeypatch.setattr(lattice_module, "_csr_mm", spy)
    return widths


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8, 12])
def test_csr_products_equal_the_gathers(monkeypatch, channels):
    g = torch.Generator().manual_seed(channels)
    fresh, _ = _stack()
    values = torch.rand(fresh.num_points, channels, generator=g)
    vertex_values = torch.rand(fresh.num_vertices, channels, generator=g)
    add = torch.randn(fresh.num_points, channels, generator=g)
    products = _every_operation(fresh, values, vertex_values, add)
    csr = channels in lattice_module._CSR_WIDTHS or channels in lattice_module._PADDED_WIDTHS
    assert bool(fresh._csr) == csr  # the path taken (whole filters pad 3, 5-7 channels)
    monkeypatch.setattr(lattice_module, "_CSR_WIDTHS", frozenset())
    reference, _ = _stack()
    gathers = _every_operation(reference, values, vertex_values, add)
    assert not reference._csr
    for name, expected in gathers.items():
        torch.testing.assert_close(products[name], expected, rtol=2e-6, atol=1e-5, msg=name)


def test_csr_products_do_not_depend_on_threads():
    lattice, g = _stack(20000)
    values = torch.rand(lattice.num_points, 4, generator=g)
    add = torch.randn(lattice.num_points, 4, generator=g)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lattice.filter_add(values, add), lattice.filter(values[:, :1])
        torch.set_num_threads(2)
        two = lattice.filter_add(values, add), lattice.filter(values[:, :1])
    finally:
        torch.set_num_threads(saved)
    assert lattice._csr
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_lattices_with_csr_matrices_copy_and_pickle():
    lattice, g = _stack()
    values = torch.rand(lattice.num_points, 4, generator=g)
    expected = lattice.filter(values)
    assert lattice._csr
    for twin in (copy.deepcopy(lattice), pickle.loads(pickle.dumps(lattice))):
        assert not twin._csr  # made again on first use
        assert torch.equal(twin.filter(values), expected)


def test_gradients_keep_the_gathers():
    lattice, g = _stack(500)
    values = torch.rand(lattice.num_points, 4, generator=g, requires_grad=True)
    (lattice.slice_values(lattice.blur(lattice.splat_values(values))) ** 2).sum().backward()
    assert values.grad is not None and torch.isfinite(values.grad).all()


@pytest.mark.parametrize("channels", [3, 5, 6, 7])
def test_whole_filters_pad_few_channels_to_a_csr_width(monkeypatch, channels):
    """filter and filter_add compute 3 or 5-7 channels as 4 or 8 (zero channels added and
    dropped again): the same values as unpadded, the product at the padded width, the
    inputs untouched, and a fresh contiguous result of the input's width."""
    lattice, g = _stack()
    values = torch.rand(lattice.num_points, channels, generator=g)
    add = torch.randn(lattice.num_points, channels, generator=g)
    kept = values.clone(), add.clone()
    padded = lattice_module._PADDED_WIDTHS[channels]
    widths = _product_widths(monkeypatch)
    results = lattice.filter(values), lattice.filter_add(values, add)
    assert set(widths) == {padded}
    for result in results:
        assert result.shape == values.shape and result.is_contiguous()
    assert torch.equal(values, kept[0]) and torch.equal(add, kept[1])
    monkeypatch.setattr(lattice_module, "_PADDED_WIDTHS", {})
    widths.clear()
    expected = lattice.filter(values), lattice.filter_add(values, add)
    assert padded not in widths
    for result, reference in zip(results, expected):
        torch.testing.assert_close(result, reference, rtol=2e-6, atol=1e-5)
    # a changed ``add`` refills the padded table (its zero channels stay zero)
    add.mul_(-1)
    monkeypatch.setattr(lattice_module, "_PADDED_WIDTHS", {channels: padded})
    torch.testing.assert_close(
        lattice.filter_add(values, add), lattice.filter(values) + add, rtol=2e-6, atol=1e-5
    )


def test_label_transforms_and_gradients_are_not_padded():
    lattice, g = _stack(500)
    values = torch.rand(lattice.num_points, 6, generator=g)
    add = torch.randn(lattice.num_points, 6, generator=g)
    mix = torch.randn(6, 6, generator=g)
    expected = lattice.slice_values(lattice.splat_blur(values, transforms=[None, mix])) + add
    out = lattice.filter_add(values, add, [None, mix])
    torch.testing.assert_close(out, expected, rtol=2e-6, atol=1e-5)
    grad_values = values.clone().requires_grad_()
    out = lattice.filter_add(grad_values, add)
    out.sum().backward()
    assert grad_values.grad is not None and grad_values.grad.shape == values.shape


@pytest.mark.parametrize("channels", [1, 2])
def test_blur_computes_one_or_two_channels_as_four(monkeypatch, channels):
    """The blur's CSR products run 1 or 2 channels padded to 4 (``_BLUR_WIDTHS``): the
    same bits as unpadded, through ``blur``, ``splat_blur`` and ``filter_add`` (which
    writes the blurred rows into its slice table), a result of the input's width."""
    lattice, g = _stack()
    vertex_values = torch.rand(lattice.num_vertices, channels, generator=g)
    values = torch.rand(lattice.num_points, channels, generator=g)
    add = torch.randn(lattice.num_points, channels, generator=g)
    widths = _product_widths(monkeypatch)

    def blurred() -> dict[str, torch.Tensor]:
        return {
            "blur": lattice.blur(vertex_values),
            "blur transposed": lattice.blur(vertex_values, transpose=True),
            "splat_blur": lattice.splat_blur(values),
            "filter_add": lattice.filter_add(values, add),
        }

    padded = blurred()
    assert 4 in widths
    monkeypatch.setattr(lattice_module, "_BLUR_WIDTHS", {})
    widths.clear()
    plain = blurred()
    assert set(widths) == {channels}
    for name, expected in plain.items():
        assert padded[name].shape == expected.shape and padded[name].is_contiguous(), name
        assert torch.equal(padded[name], expected), name
