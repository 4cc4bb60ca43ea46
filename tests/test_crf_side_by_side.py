"""SideBySide's derived last label: with Potts kernels and marginals that sum to 1 per
run, filtering L-1 labels per run and deriving the last (m_L = m(1) - sum m_l) gives the
messages of filtering all L, where that is cheaper; every other case filters all labels."""

from __future__ import annotations

import pytest
import torch

from deepcrf.crf import Kernel, Pairwise, SideBySide, mean_field
from deepcrf.lattice import Lattice


def _runs(runs: int, labels: int, n: int = 600, seed: int = 0, compat=(3.0, 10.0)):
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, 2, generator=g) * 8
    bilateral = torch.rand(n, 5, generator=g) * 3
    kernels = [Kernel(grid, compat[0]), Kernel(bilateral, compat[1])]
    unary = torch.log_softmax(torch.randn(n * runs, labels, generator=g) * 2, 1)
    return kernels, unary


def _filtered_widths(monkeypatch) -> list[int]:
    widths: list[int] = []
    original = Lattice.filter_add

    def spy(self, values, add, transforms=None):
        widths.append(values.shape[1])
        return original(self, values, add, transforms)

    monkeypatch.setattr(Lattice, "filter_add", spy)
    return widths


def _all_labels(monkeypatch):
    monkeypatch.setattr(SideBySide, "_derives_last_label", lambda self, logits, q: False)


@pytest.mark.parametrize(("runs", "labels"), [(2, 3), (2, 5), (1, 5), (3, 3)])
def test_derived_last_label_equals_filtering_every_label(monkeypatch, runs, labels):
    kernels, unary = _runs(runs, labels, seed=runs * 10 + labels)
    widths = _filtered_widths(monkeypatch)
    derived = mean_field(unary, SideBySide(Pairwise(kernels, runs * labels), runs), 5)
    assert widths == [1] + [runs * (labels - 1)] * 5  # m(1) once, then L-1 labels per run
    widths.clear()
    _all_labels(monkeypatch)
    full = mean_field(unary, SideBySide(Pairwise(kernels, runs * labels), runs), 5)
    assert widths == [runs * labels] * 5
    torch.testing.assert_close(derived, full, rtol=1e-5, atol=3e-6)
    assert torch.equal(derived.argmax(1), full.argmax(1))


def test_one_message_with_marginals_equals_every_label_filtered(monkeypatch):
    kernels, unary = _runs(2, 3, seed=7)
    g = torch.Generator().manual_seed(8)
    q = torch.softmax(torch.randn(unary.shape, generator=g) * 3, 1)
    side = SideBySide(Pairwise(kernels, 6), 2)
    derived = side.add_message(unary, q)
    again = side.add_message(unary, q)  # the kept unaries and m(1) are reused
    _all_labels(monkeypatch)
    full = SideBySide(Pairwise(kernels, 6), 2).add_message(unary, q)
    torch.testing.assert_close(derived, full, rtol=1e-5, atol=3e-6)
    assert torch.equal(derived, again)
    assert derived.shape == unary.shape and derived.is_contiguous()


@pytest.mark.parametrize(("runs", "labels"), [(2, 2), (1, 2), (2, 4), (1, 3)])
def test_no_derivation_where_it_is_not_cheaper(monkeypatch, runs, labels):
    """2 runs of 2 labels filter 4 channels, which cost what 2 would; 2 x 4 = 8 channels
    cost what 2 x 3 = 6 would (padded to 8)."""
    kernels, unary = _runs(runs, labels)
    widths = _filtered_widths(monkeypatch)
    mean_field(unary, SideBySide(Pairwise(kernels, runs * labels), runs), 2)
    assert widths == [runs * labels] * 2


def test_other_compatibilities_gradients_and_infinite_unaries_filter_every_label(monkeypatch):
    widths = _filtered_widths(monkeypatch)
    # per-channel (diagonal) compatibilities: the message of all-ones is not one per run
    kernels, unary = _runs(2, 3, compat=(torch.tensor([-1.0, -2, -3, -1, -2, -3]), 10.0))
    mean_field(unary, SideBySide(Pairwise(kernels, 6), 2), 2)
    assert widths == [6, 6]
    # gradients through the messages
    widths.clear()
    kernels, unary = _runs(2, 3, seed=3)
    grad_unary = unary.clone().requires_grad_()
    mean_field(grad_unary, SideBySide(Pairwise(kernels, 6), 2), 2).sum().backward()
    assert grad_unary.grad is not None and torch.isfinite(grad_unary.grad).all()
    assert 4 not in widths
    # an impossible label (-inf): no -inf - -inf, every label filtered
    widths.clear()
    unary = unary.clone()
    unary[::7, 2] = -float("inf")
    q = mean_field(unary, SideBySide(Pairwise(kernels, 6), 2), 3)
    assert widths == [6, 6, 6]
    assert torch.isfinite(q).all() and bool((q[::7, 2] == 0).all())
