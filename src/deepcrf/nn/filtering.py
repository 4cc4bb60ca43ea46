"""Differentiable Gaussian filtering on a permutohedral lattice built once per forward pass.

``lattice_filter(lattice, values, features)`` returns K·values where K is the lattice's
approximation of the Gaussian kernel exp(-|f_i - f_j|^2 / 2) on ``features``. Its backward
never differentiates through sparse ops (slow) but filters again on the same lattice:

* w.r.t. the values: Kᵀ·grad, the transposed filter (``Lattice.filter(transpose=True)``);
* w.r.t. the features, through the derivative of the Gaussian,
  d/df_i sum_j k(f_i, f_j) v_j = sum_j k(f_i, f_j) (f_j - f_i) v_j = K(f ⊙ v)_i - f_i K(v)_i,
  i.e. more filtering of values times features. For L = <g, K v> with f_i appearing as
  both the first and the second argument of the kernel,
  dL/df_i = sum_c g_ic [K(f v_c) - f_i K(v_c)]_i + v_ic [Kᵀ(f g_c) - f_i Kᵀ(g_c)]_i.
  On the exact kernel this is exact; on the lattice (whose blur is only close to a
  Gaussian) it is an approximation that points the same way.

The features are only read (detached) to build the lattice; their gradient flows through
this Function alone, so e.g. log-bandwidths f = p / θ receive the chain rule by autograd.
"""

from __future__ import annotations

import torch

from deepcrf.lattice import Lattice

__all__ = ["LatticeFilter", "ScaledLatticeFilter", "feature_gradient", "lattice_filter"]


class LatticeFilter(torch.autograd.Function):
    """K·values on a prebuilt, unscaled lattice; gradients w.r.t. values and features."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, features: torch.Tensor | None, lattice: Lattice):
        ctx.lattice = lattice
        if features is not None and ctx.needs_input_grad[1]:
            ctx.save_for_backward(values, features)
        return lattice.filter(values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lattice: Lattice = ctx.lattice
        grad = grad.float().contiguous()
        need_values, need_features = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not need_features:
            grad_values = lattice.filter(grad, transpose=True) if need_values else None
            return grad_values, None, None
        values, features = ctx.saved_tensors
        v = values.float()
        kt_g = lattice.filter(grad, transpose=True)
        grad_features = feature_gradient(lattice, features, v, grad, lattice.filter(v), kt_g)
        grad_values = kt_g if need_values else None
        return grad_values, grad_features.to(features.dtype), None


def feature_gradient(
    lattice: Lattice,
    features: torch.Tensor,
    values: torch.Tensor,
    grad: torch.Tensor,
    filtered: torch.Tensor,
    filtered_grad: torch.Tensor,
) -> torch.Tensor:
    """dL/df (N, d) for L = <grad, K values> by the Gaussian-derivative identity.

    ``filtered`` = K values and ``filtered_grad`` = Kᵀ grad (already computed by the caller).
    One feature dimension at a time, so memory stays at a few (N, C) tensors.
    """
    f = features.detach().float()
    columns = []
    for a in range(f.shape[1]):
        fa = f[:, a : a + 1]
        forward = (lattice.filter(fa * values) - fa * filtered).mul_(grad).sum(1)
        backward = (lattice.filter(fa * grad, transpose=True) - fa * filtered_grad).mul_(values)
        columns.append(forward + backward.sum(1))
    return torch.stack(columns, dim=1)


class ScaledLatticeFilter(torch.autograd.Function):
    """w ⊙ a ⊙ K(b ⊙ q): one normalised, weighted kernel term with learnable features.

    Saves only the small per-point scales, the weights and the features (q is the loop's
    marginals, kept anyway); K(b ⊙ q) is recomputed in the backward pass.
    """

    @staticmethod
    def forward(ctx, q, before, after, weights, features, lattice: Lattice):
        x = q if before is None else q * before[:, None]
        out = lattice.filter(x)
        if after is not None:
            out.mul_(after[:, None])
        ctx.lattice = lattice
        ctx.save_for_backward(q, before, after, weights, features)
        return out.mul_(weights)

    @staticmethod
    def backward(ctx, grad):
        lattice: Lattice = ctx.lattice
        q, before, after, weights, features = ctx.saved_tensors
        grad = grad.float().contiguous()
        q32 = q.float()
        x = q32 if before is None else q32 * before[:, None]
        y = lattice.filter(x)  # K x, recomputed
        z = y if after is None else y * after[:, None]
        grad_w = (grad * z).sum(0) if ctx.needs_input_grad[3] else None
        gz = grad * weights
        grad_after = (gz * y).sum(1) if after is not None and ctx.needs_input_grad[2] else None
        gy = gz if after is None else gz * after[:, None]
        dx = lattice.filter(gy, transpose=True)
        grad_q = dx if before is None else dx * before[:, None]
        grad_before = (dx * q32).sum(1) if before is not None and ctx.needs_input_grad[1] else None
        grad_f = None
        if ctx.needs_input_grad[4]:
            grad_f = feature_gradient(lattice, features, x, gy, y, dx).to(features.dtype)
        return grad_q, grad_before, grad_after, grad_w, grad_f, None


def lattice_filter(
    lattice: Lattice, values: torch.Tensor, features: torch.Tensor | None = None
) -> torch.Tensor:
    """Filter ``values`` (N, C) on ``lattice`` (built from ``features`` (N, d), detached).

    Pass ``features`` only when they need a gradient (learned bandwidths); the result is
    float32, like the lattice's arithmetic.
    """
    if lattice.scaled:
        raise ValueError("lattice: expected an unscaled lattice (its transpose is needed)")
    if features is not None and features.shape[0] != values.shape[0]:
        raise ValueError(
            f"features: expected {values.shape[0]} rows like values, got {features.shape[0]}"
        )
    return LatticeFilter.apply(values, features, lattice)
