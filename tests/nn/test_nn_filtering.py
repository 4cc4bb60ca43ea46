"""lattice_filter's backward: the transposed filter and the Gaussian-derivative feature gradient."""

from __future__ import annotations

import pytest
import torch

from deepcrf.exact import exact_filter
from deepcrf.features import grid_features
from deepcrf.lattice import build_lattice
from deepcrf.nn import lattice_filter
from deepcrf.nn.filtering import ScaledLatticeFilter


def points(n=300, d=3, spread=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * spread, torch.rand(n, 4, generator=g)


def test_value_gradient_is_the_transposed_filter():
    f, v = points()
    lattice = build_lattice(f)
    v = v.requires_grad_(True)
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
    out = lattice_filter(lattice, v)
    assert torch.allclose(out, lattice.filter(v.detach()))
    out.backward(g)
    assert torch.allclose(v.grad, lattice.filter(g, transpose=True))
    # adjoint identity <g, K v> = <K^T g, v>
    assert torch.allclose((g * out).sum(), (v.grad * v).sum(), rtol=1e-5)


def gaussian_derivative_feature_grad(f, v, g):
    """dL/df for L = <g, K v> by the identity used in the lattice backward, on exact K."""
    n, c = v.shape
    d = f.shape[1]
    fv = (f[:, :, None] * v[:, None, :]).reshape(n, d * c)
    fg = (f[:, :, None] * g[:, None, :]).reshape(n, d * c)
    k_fv = exact_filter(f, fv).reshape(n, d, c)
    k_fg = exact_filter(f, fg).reshape(n, d, c)  # exact K is symmetric
    k_v, k_g = exact_filter(f, v), exact_filter(f, g)
    return (
        torch.einsum("nac,nc->na", k_fv, g)
        - f * (k_v * g).sum(1, keepdim=True)
        + torch.einsum("nac,nc->na", k_fg, v)
        - f * (k_g * v).sum(1, keepdim=True)
    )


def test_gaussian_derivative_identity_is_exact_on_the_exact_kernel():
    f, v = points(n=120, d=3, seed=2)
    f, v = f.double(), v.double()
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = f.clone().requires_grad_(True)
    (exact_filter(x, v) * g).sum().backward()
    assert torch.allclose(gaussian_derivative_feature_grad(f, v, g), x.grad, atol=1e-10)


@pytest.mark.parametrize("d", [2, 5])
def test_lattice_feature_gradient_points_like_the_exact_one(d):
    # a well sampled feature space (a fine pixel grid plus smooth extra features)
    grid = grid_features((24, 24), 2.0)
    extra = [torch.sin(grid[:, :1] * (k + 1) * 0.7) for k in range(d - 2)]
    f = torch.cat([grid, *extra], dim=1)
    v = torch.rand(f.shape[0], 3, generator=torch.Generator().manual_seed(4))
    g = torch.randn(v.shape, generator=torch.Generator().manual_seed(5))
    x = f.clone().requires_grad_(True)
    (lattice_filter(build_lattice(f), v, x) * g).sum().backward()
    y = f.clone().requires_grad_(True)
    (exact_filter(y, v) * g).sum().backward()
    cosine = torch.nn.functional.cosine_similarity(x.grad.flatten(), y.grad.flatten(), dim=0)
    assert cosine > 0.9, cosine


def test_scaled_lattice_and_row_mismatch_are_rejected():
    f, v = points()
    lattice = build_lattice(f)
    with pytest.raises(ValueError, match="lattice"):
        lattice_filter(lattice.scale(torch.ones(300), None), v)
    with pytest.raises(ValueError, match="features"):
        lattice_filter(lattice, v, f[:10])


@pytest.mark.parametrize("scaled", ["both", "before", "after", "none"])
def test_scaled_filter_function_equals_autograd_composition(scaled):
    f, q = points(n=200, d=3, seed=6)
    g = torch.Generator().manual_seed(7)
    lattice = build_lattice(f)
    before = (torch.rand(200, generator=g) + 0.5) if scaled in ("both", "before") else None
    after = (torch.rand(200, generator=g) + 0.5) if scaled in ("both", "after") else None
    weights = torch.rand(4, generator=g) + 0.5
    upstream = torch.randn(200, 4, generator=g)
    grads = []
    for fused in (True, False):
        leaves = [
            t.clone().requires_grad_(True) if t is not None else None
            for t in (q, before, after, weights, f)
        ]
        lq, lb, la, lw, lf = leaves
        if fused:
            out = ScaledLatticeFilter.apply(lq, lb, la, lw, lf, lattice)
        else:
            x = lq if lb is None else lq * lb[:, None]
            out = lattice_filter(lattice, x, lf)
            out = (out if la is None else out * la[:, None]) * lw
        (out * upstream).sum().backward()
        grads.append([out.detach()] + [t.grad for t in leaves if t is not None])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max())
