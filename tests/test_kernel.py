"""deepcrf.kernel: NormalizedKernel (apply, transpose, scales, feature gradient) and
lattice_filter's backward (the transposed filter, the Gaussian-derivative feature gradient)."""

from __future__ import annotations

import pytest
import torch

from deepcrf.exact import exact_filter
from deepcrf.features import grid_features
from deepcrf.kernel import (
    NormalizedKernel,
    _ScaledFilter,
    bandwidth_gradient,
    feature_gradient,
    lattice_filter,
    normalization_scales,
)
from deepcrf.lattice import build_lattice


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
    upstream = torch.randn(200, 4, generator=g)
    grads = []
    for fused in (True, False):
        leaves = [
            t.clone().requires_grad_(True) if t is not None else None for t in (q, before, after, f)
        ]
        lq, lb, la, lf = leaves
        if fused:
            out = _ScaledFilter.apply(lq, lb, la, lf, lattice)
        else:
            x = lq if lb is None else lq * lb[:, None]
            out = lattice_filter(lattice, x, lf)
            out = out if la is None else out * la[:, None]
        (out * upstream).sum().backward()
        grads.append([out.detach()] + [t.grad for t in leaves if t is not None])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max())


def brute_kernel(f: torch.Tensor) -> torch.Tensor:
    """The dense Gaussian kernel matrix exp(-|f_i - f_j|^2 / 2), an independent reference."""
    return torch.exp(-0.5 * torch.cdist(f, f) ** 2)


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
def test_normalized_kernel_equals_the_dense_matrix_formula(normalization):
    f, v = points(n=150, d=3, seed=8)
    f, v = f.double(), v.double()
    kmat = brute_kernel(f)
    n = kmat.sum(1)
    b, a = {
        "symmetric": (n**-0.5, n**-0.5),
        "before": (1 / n, torch.ones_like(n)),
        "after": (torch.ones_like(n), 1 / n),
        "none": (torch.ones_like(n), torch.ones_like(n)),
    }[normalization]
    op = a[:, None] * kmat * b[None, :]
    kernel = NormalizedKernel(f, normalization, filter="exact")
    assert torch.allclose(kernel.apply(v), op @ v, atol=1e-10)
    assert torch.allclose(kernel.apply_transposed(v), op.t() @ v, atol=1e-10)
    assert torch.allclose(kernel.row_sums().double(), op.sum(1), atol=1e-6)
    # the lattice kernel approximates the same normalised operator (unnormalised, its scale
    # differs from the Gaussian's, as pydensecrf's does); its transpose is its adjoint
    lat = NormalizedKernel(f.float(), normalization)
    out = lat.apply(v.float())
    if normalization == "symmetric":
        assert (out.double() - op @ v).abs().max() < 0.1 * (op @ v).abs().max()
    g = torch.randn(150, 4, generator=torch.Generator().manual_seed(9))
    left = (g * out).sum()
    right = (lat.apply_transposed(g) * v.float()).sum()
    assert torch.allclose(left, right, rtol=1e-4)
    forward, backward = lat.scaled_lattices()
    assert forward.scaled and torch.allclose(forward.filter(v.float()), out, atol=1e-5)
    transposed = backward.slice_values(backward.blur(backward.splat_values(g), transpose=True))
    assert torch.allclose(transposed, lat.apply_transposed(g), atol=1e-6)


def test_learnable_features_get_exact_gradients_through_kernel_and_scales():
    f, v = points(n=40, d=2, seed=10)
    f, v = f.double(), v.double()
    g = torch.randn(40, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)

    def loss(x):
        kernel = NormalizedKernel(x, "symmetric", filter="exact")
        return (kernel.apply(v) * g).sum()

    assert torch.autograd.gradcheck(loss, (f.clone().requires_grad_(True),), atol=1e-8)
    # the identity-based feature gradient equals autograd's on the exact kernel
    kernel = NormalizedKernel(f, "none", filter="exact")
    x = f.clone().requires_grad_(True)
    (exact_filter(x, v) * g).sum().backward()
    assert torch.allclose(kernel.feature_gradient(v, g), x.grad, atol=1e-10)
    assert torch.allclose(gaussian_derivative_feature_grad(f, v, g), x.grad, atol=1e-10)


def test_lattice_alpha_and_scales_are_the_documented_ones():
    f, _ = points(n=50, d=4, seed=12)
    lattice = build_lattice(f)
    assert lattice.alpha == pytest.approx(1 / (1 + 2**-4))
    kernel = NormalizedKernel(f)
    assert kernel.alpha == lattice.alpha
    before, after = normalization_scales(lattice.row_sums, "symmetric")
    assert before is after and torch.allclose(before, kernel.before)
    with pytest.raises(ValueError, match="normalization"):
        NormalizedKernel(f, "sideways")
    with pytest.raises(ValueError, match="filter"):
        NormalizedKernel(f, filter="fast")


@pytest.mark.parametrize("d", [2, 5])
def test_bandwidth_gradient_has_the_full_gradient_contraction_on_the_lattice(d):
    """sum_i f_ia G'_ia equals sum_i f_ia dL/df_ia (what a bandwidth needs), lattice K."""
    f, _ = points(n=400, d=d, seed=13)
    v = torch.rand(400, 5, generator=torch.Generator().manual_seed(14))
    g = torch.randn(400, 5, generator=torch.Generator().manual_seed(15))
    lattice = build_lattice(f)
    kv, ktg = lattice.filter(v), lattice.filter(g, transpose=True)
    full = feature_gradient(lattice, f, v, g, kv, ktg)
    cheap = bandwidth_gradient(lattice, f, v, g, kv, ktg)
    assert torch.allclose((f * cheap).sum(0), (f * full).sum(0), rtol=1e-4, atol=1e-3)
    # and therefore the gradient of a bandwidth theta (f = raw / theta) is the same
    raw = f * 2.0
    grads = []
    for scale_only in (True, False):
        theta = torch.full((d,), 2.0, requires_grad=True)
        kernel = NormalizedKernel(raw / theta, "symmetric", scale_gradient_only=scale_only)
        (kernel.apply(v) * g).sum().backward()
        grads.append(theta.grad)
    assert grads[1].abs().max() > 1e-3
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-3 * grads[1].abs().max())


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("transform", ["potts", "vector", "matrix"])
def test_bandwidth_message_equals_the_per_point_gradient_path(normalization, transform):
    """add_message of a learnable-bandwidth lattice kernel (one Function: folded scales,
    transform on the vertices, moment splats) against the generic composition: apply with
    the full per-point feature gradient (feature_gradient), the transform and the logits
    added on the points, all through autograd."""
    g = torch.Generator().manual_seed(16)
    raw = torch.rand(500, 3, generator=g) * torch.tensor([20.0, 20.0, 60.0])
    q = torch.softmax(torch.randn(500, 4, generator=g), 1)
    logits = torch.randn(500, 4, generator=g)
    upstream = torch.randn(500, 4, generator=g)
    t = {
        "potts": torch.tensor(0.7),
        "vector": torch.rand(4, generator=g) + 0.5,
        "matrix": torch.randn(4, 4, generator=g),
    }[transform]
    grads = []
    for fused in (True, False):
        theta = torch.tensor([4.0, 5.0, 12.0], requires_grad=True)
        lq, ll, lt = (v.clone().requires_grad_(True) for v in (q, logits, t))
        kernel = NormalizedKernel(raw / theta, normalization, scale_gradient_only=fused)
        if fused:
            out = kernel.add_message(ll, lq, lt)
        else:
            y = kernel.apply(lq)
            out = ll + (y @ lt if lt.dim() == 2 else y * lt)
        (out * upstream).sum().backward()
        grads.append([out.detach(), lq.grad, ll.grad, lt.grad, theta.grad])
    assert grads[1][-1].abs().max() > 1e-4  # the bandwidths get a gradient
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=2e-3 * b.abs().max()), (a, b)
