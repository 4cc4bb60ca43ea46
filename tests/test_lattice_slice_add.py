"""Slicing with the unary add fused into the gather: same values as slice + add, always."""

from __future__ import annotations

import threading

import torch

from deepcrf.lattice import build_lattice, stack_lattices


def _stack(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    grid = build_lattice(torch.rand(n, 2, generator=g) * 4)
    bilateral = build_lattice(torch.rand(n, 5, generator=g) * 3)
    return stack_lattices([grid.scale(None, torch.full((n,), 3.0)), bilateral]), g


def test_fused_add_equals_slice_plus_add():
    lattice, g = _stack()
    values = torch.randn(lattice.num_vertices, 4, generator=g)
    add = torch.randn(lattice.num_points, 4, generator=g)
    expected = lattice.slice_values(values) + add
    torch.testing.assert_close(lattice.slice_values(values, add=add), expected)
    # the cached copy of ``add`` is reused for new vertex values ...
    values2 = torch.randn(lattice.num_vertices, 4, generator=g)
    torch.testing.assert_close(
        lattice.slice_values(values2, add=add), lattice.slice_values(values2) + add
    )
    # ... and refreshed when ``add`` changes in place or is another tensor
    add.mul_(-2)
    torch.testing.assert_close(
        lattice.slice_values(values2, add=add), lattice.slice_values(values2) + add
    )
    other = torch.randn(lattice.num_points, 4, generator=g)
    torch.testing.assert_close(
        lattice.slice_values(values2, add=other), lattice.slice_values(values2) + other
    )
    view = other[:, :3]  # a strided view, and a different channel count
    torch.testing.assert_close(
        lattice.slice_values(values2[:, :3], add=view), lattice.slice_values(values2[:, :3]) + view
    )


def test_gradients_and_other_dtypes_take_the_plain_addition():
    lattice, g = _stack(120, seed=1)
    values = torch.randn(lattice.num_vertices, 3, generator=g, requires_grad=True)
    add = torch.randn(lattice.num_points, 3, generator=g, requires_grad=True)
    lattice.slice_values(values, add=add).square().sum().backward()
    grad_values, grad_add = values.grad.clone(), add.grad.clone()
    values.grad = add.grad = None
    (lattice.slice_values(values) + add).square().sum().backward()
    torch.testing.assert_close(values.grad, grad_values)
    torch.testing.assert_close(add.grad, grad_add)
    add64 = add.detach().double()
    out = lattice.slice_values(values.detach(), add=add64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, lattice.slice_values(values.detach()) + add64)


def test_concurrent_slices_of_one_lattice_do_not_mix_tables():
    lattice, g = _stack(500, seed=2)
    cases = [
        (
            torch.randn(lattice.num_vertices, 5, generator=g),
            torch.randn(lattice.num_points, 5, generator=g),
        )
        for _ in range(4)
    ]
    expected = [lattice.slice_values(v) + a for v, a in cases]
    errors = []

    def work(k: int) -> None:
        for _ in range(20):
            values, add = cases[k]
            if not torch.allclose(lattice.slice_values(values, add=add), expected[k]):
                errors.append(k)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors


def test_lattices_with_a_table_still_copy_and_pickle():
    import copy
    import pickle

    lattice, g = _stack(80, seed=3)
    values = torch.randn(lattice.num_vertices, 2, generator=g)
    add = torch.randn(lattice.num_points, 2, generator=g)
    expected = lattice.slice_values(values, add=add)  # the table now exists
    for clone in (copy.deepcopy(lattice), pickle.loads(pickle.dumps(lattice))):
        torch.testing.assert_close(clone.slice_values(values, add=add), expected)


def test_filter_add_equals_splat_blur_then_slice_plus_add():
    lattice, g = _stack(seed=3)
    n = lattice.num_points
    values = torch.rand(n, 4, generator=g)
    add = torch.randn(n, 4, generator=g)
    mix = torch.randn(4, 4, generator=g)
    for transforms in (None, [None, mix], [mix, None]):
        blurred = lattice.splat_blur(values, transforms=transforms)
        expected = lattice.slice_values(blurred) + add
        torch.testing.assert_close(lattice.filter_add(values, add, transforms), expected)
        torch.testing.assert_close(lattice.filter_add(values, add, transforms), expected)
    # a single lattice, and the unfused path when ``add`` needs a gradient
    single = build_lattice(torch.rand(n, 3, generator=g) * 2)
    expected = single.filter(values) + add
    torch.testing.assert_close(single.filter_add(values, add), expected)
    grad_add = add.clone().requires_grad_()
    out = single.filter_add(values, grad_add)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    torch.testing.assert_close(grad_add.grad, torch.ones_like(add))
