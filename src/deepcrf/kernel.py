"""``NormalizedKernel``: one Gaussian kernel of a dense CRF with its normalisation.

pydensecrf's DenseKernel is the model: a kernel owns its features' lattice (or the exact
brute-force filter), its normalisation scales and the filter, its transpose and the
feature gradient. With n = K·1 (the row sums of the Gaussian kernel K on the features),
pydensecrf's normalisations scale K on both sides, ``apply(v) = a ⊙ K(b ⊙ v)``:

=============  ==============  ==============
normalization  before b        after a
=============  ==============  ==============
symmetric      n^-1/2          n^-1/2
before         n^-1            1
after          1               n^-1
none           1               1
=============  ==============  ==============

Features that require a gradient (learnable bandwidths, f = positions / θ) make the
kernel differentiable with respect to them, through K and through n = K·1. Their gradient
uses the Gaussian derivative d/df_i Σ_j k(f_i, f_j) v_j = Σ_j k(f_i, f_j) (f_j - f_i) v_j,
i.e. more filtering of values times features on the same lattice (exact on the exact
kernel, an approximation that points the same way on the lattice). When the features are
fixed data divided by learnable bandwidths (``scale_gradient_only``), ``add_message`` runs
a whole CRF message with scales folded into the lattice and the label transform on the
vertices, and the bandwidth gradient of all the kernel's messages is computed once, after
their backward passes, with wide feature-weighted splats (``deepcrf.bandwidth``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

from deepcrf.bandwidth import (
    DeferredBandwidths,
    bandwidth_hub,
    bandwidth_message,
    centred,
    scale_gradient,
)
from deepcrf.exact import exact_filter
from deepcrf.lattice import Lattice, build_lattice

__all__ = [
    "FILTERS",
    "NORMALIZATIONS",
    "NormalizedKernel",
    "bandwidth_gradient",
    "feature_gradient",
    "lattice_filter",
    "normalization_scales",
]

NORMALIZATIONS = ("symmetric", "before", "after", "none")
FILTERS = ("lattice", "exact")


def normalization_scales(norm: torch.Tensor, normalization: str):
    """(before, after) per-point scales of a kernel with row sums ``norm``, as pydensecrf
    computes them (differentiable; None where that side is not scaled)."""
    if normalization == "symmetric":
        s = 1.0 / torch.sqrt(norm + 1e-20)
        return s, s
    if normalization == "before":
        return 1.0 / (norm + 1e-20), None
    if normalization == "after":
        return None, 1.0 / (norm + 1e-20)
    if normalization == "none":
        return None, None
    raise ValueError(f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}")


class NormalizedKernel:
    """``a ⊙ K(b ⊙ v)`` for the Gaussian kernel K on ``features`` (see module docstring).

    Args:
        features: (N, d) per-point features already divided by their bandwidths; when they
            require grad (and grad is enabled) the kernel is differentiable w.r.t. them.
        normalization: one of ``NORMALIZATIONS``.
        segments: start offsets of independent point sets (images of a batch), length B+1.
        filter: "lattice" (permutohedral, float32) or "exact" (brute force, any dtype).
        lattice: an already built, unscaled lattice of ``features`` (e.g. from a cache).
        scale_gradient_only: the features' gradient is consumed only through per-dimension
            scales (features = raw / bandwidths with ``raw`` fixed, as for learnable
            bandwidths). The lattice backward then computes the exact per-dimension
            contraction sum_i f_ia dL/df_ia with one pass of d·C channels instead of two
            (see ``bandwidth_gradient``); the per-point gradient it returns is valid only
            under that contraction.
    """

    def __init__(
        self,
        features: torch.Tensor,
        normalization: str = "symmetric",
        segments: Sequence[int] | None = None,
        filter: str = "lattice",
        lattice: Lattice | None = None,
        scale_gradient_only: bool = False,
    ) -> None:
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if features.dim() != 2:
            raise ValueError(f"features: expected (N, d), got {tuple(features.shape)}")
        if lattice is not None and (lattice.scaled or len(lattice.blocks) != 2):
            raise ValueError("lattice: expected an unscaled, single (not stacked) lattice")
        self.learnable = features.requires_grad and torch.is_grad_enabled()
        self.features = features if self.learnable else features.detach()
        self.normalization = normalization
        self.scale_gradient_only = scale_gradient_only
        self.segments = tuple(segments) if segments is not None else None
        self.filter = filter
        self.num_points = features.shape[0]
        ones = self.features.new_ones(self.num_points, 1)
        if filter == "lattice":
            self.lattice = lattice or build_lattice(self.features.detach(), self.segments)
            if self.learnable and scale_gradient_only:
                norm = _ScaleOnlyRowSums.apply(self.features, self.lattice)
            elif self.learnable:
                norm = lattice_filter(self.lattice, ones.float(), self.features)[:, 0]
            else:
                norm = self.lattice.row_sums
        else:
            self.lattice = None
            norm = exact_filter(self.features, ones, self.segments)[:, 0]
        self.before, self.after = normalization_scales(norm, normalization)
        self._deferred = None
        if self.lattice is not None and self.learnable and scale_gradient_only:
            # the bandwidth gradient of all this kernel's messages, computed after them
            self._deferred = DeferredBandwidths(self.lattice, lambda: self._scaled)
            self._token = bandwidth_hub(self.features, self.before, self.after, self._deferred)

    @property
    def alpha(self) -> float:
        """The lattice's slice constant (slice = alpha · splatᵀ)."""
        if self.lattice is None:
            raise ValueError("alpha: an exact kernel has no lattice")
        return self.lattice.alpha

    def scaled_lattices(self, weight: float | None = None) -> tuple[Lattice, Lattice]:
        """(forward, backward) lattices with the scales folded into splat and slice:
        forward computes diag(w·a) K diag(b), backward its transpose diag(b) Kᵀ diag(w·a)
        (with ``blur(transpose=True)``); the same object when the operator is symmetric.
        ``weight`` w (a Potts weight) is optional. See ``scaled_lattice``."""
        return self.scaled_lattice(weight), self.scaled_lattice(weight, transpose=True)

    def scaled_lattice(self, weight: float | None = None, transpose: bool = False) -> Lattice:
        """The forward (or, with ``transpose``, backward) lattice of ``scaled_lattices``,
        built on first use: inference never needs the backward one. Kernels on fixed
        features keep them with their lattice, so a cached lattice
        (``features.grid_lattice``) is scaled once."""
        if self.lattice is None:
            raise ValueError("scaled_lattices: an exact kernel has no lattice")
        if transpose and self.before is self.after and weight is None:  # symmetric
            return self.scaled_lattice(weight)
        cache = None
        if not self.learnable:  # the scales derive from the lattice's own row sums
            cache = self.lattice.__dict__.setdefault("_normalized", {})
            key = (self.normalization, weight, transpose)
            if key in cache:
                return cache[key]
        before = None if self.before is None else self.before.detach()
        after = None if self.after is None else self.after.detach()
        if weight is not None:
            after = (
                torch.full((self.num_points,), float(weight), device=self.lattice.device)
                if after is None
                else after * weight
            )
        if transpose:
            before, after = after, before
        lattice = self.lattice.scale(before, after)
        if cache is not None:
            cache[key] = lattice
        return lattice

    @cached_property
    def _scaled(self) -> tuple[Lattice, Lattice]:
        return self.scaled_lattices()

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """``a ⊙ K(b ⊙ values)`` for (N, C) values; differentiable w.r.t. the values and,
        for learnable features, the features (through K and the scales)."""
        if self.lattice is not None:
            features = self.features if self.learnable else None
            return _ScaledFilter.apply(
                values, self.before, self.after, features, self.lattice, self.scale_gradient_only
            )
        x = values if self.before is None else values * self.before[:, None].to(values)
        y = exact_filter(self.features, x, self.segments)
        return y if self.after is None else y * self.after[:, None].to(y)

    def add_message(
        self, logits: torch.Tensor, values: torch.Tensor, transform: float | torch.Tensor = 1.0
    ) -> torch.Tensor:
        """``logits + T(a ⊙ K(b ⊙ values))`` as a new tensor, with the label transform T a
        number w (w·y), a per-label vector v (y ⊙ v) or an (L, L) matrix (y @ T), as
        ``crf.Pairwise`` applies compatibilities. Differentiable like ``apply``; kernels with
        learnable bandwidths (``scale_gradient_only``) on the lattice apply T to the few
        lattice vertices and compute their bandwidth gradient in the same backward pass
        (see ``deepcrf.bandwidth``)."""
        if self._deferred is not None:
            return bandwidth_message(logits, values, transform, self._token, self._deferred)
        y = self.apply(values)
        t = torch.as_tensor(transform).to(y)
        return logits + (y @ t if t.dim() == 2 else y * t)

    def apply_transposed(self, values: torch.Tensor) -> torch.Tensor:
        """``b ⊙ Kᵀ(a ⊙ values)``, the transposed operator (not differentiable)."""
        values = values.detach()
        if self.lattice is not None:
            backward = self._scaled[1]
            return backward.slice_values(backward.blur(backward.splat_values(values), True))
        x = values if self.after is None else values * self.after.detach()[:, None].to(values)
        y = exact_filter(self.features.detach(), x, self.segments)  # exact K is symmetric
        return y if self.before is None else y * self.before.detach()[:, None].to(y)

    def row_sums(self) -> torch.Tensor:
        """(N,) row sums of the normalised operator: ``apply`` of all-ones values."""
        with torch.no_grad():
            if self.before is None and self.lattice is not None:
                sums = self.lattice.row_sums
                return sums if self.after is None else sums * self.after
            if self.lattice is None or self.learnable:
                return self.apply(self.features.new_ones(self.num_points, 1).float())[:, 0]
            # fixed features: kept with the lattice (a cached grid lattice filters once)
            cache = self.lattice.__dict__.setdefault("_normalized", {})
            key = ("row_sums", self.normalization)
            if key not in cache:
                cache[key] = self.apply(self.features.new_ones(self.num_points, 1).float())[:, 0]
            return cache[key]

    def feature_gradient(self, values: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """dL/df (N, d) for L = <grad, K values> (the unnormalised kernel), see
        ``feature_gradient``; on the exact kernel this equals autograd's."""
        if self.lattice is None:
            f = self.features.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = exact_filter(f, values.detach().to(f.dtype), self.segments)
                (g,) = torch.autograd.grad(out, f, grad.to(out.dtype))
            return g
        v, g = values.float(), grad.float()
        return feature_gradient(
            self.lattice,
            self.features,
            v,
            g,
            self.lattice.filter(v),
            self.lattice.filter(g, transpose=True),
        )


def feature_gradient(
    lattice: Lattice,
    features: torch.Tensor,
    values: torch.Tensor,
    grad: torch.Tensor,
    filtered: torch.Tensor,
    filtered_grad: torch.Tensor,
) -> torch.Tensor:
    """dL/df (N, d) for L = <grad, K values> by the Gaussian-derivative identity

        dL/df_i = Σ_c g_ic [K(f v_c) - f_i K(v_c)]_i + v_ic [Kᵀ(f g_c) - f_i Kᵀ(g_c)]_i,

    with ``filtered`` = K values and ``filtered_grad`` = Kᵀ grad (already computed by the
    caller). One feature dimension at a time, so memory stays at a few (N, C) tensors.
    """
    f = features.detach().float()
    columns = []
    for a in range(f.shape[1]):
        fa = f[:, a : a + 1]
        forward = (lattice.filter(fa * values) - fa * filtered).mul_(grad).sum(1)
        backward = (lattice.filter(fa * grad, transpose=True) - fa * filtered_grad).mul_(values)
        columns.append(forward + backward.sum(1))
    return torch.stack(columns, dim=1)


class _LatticeFilter(torch.autograd.Function):
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


def lattice_filter(
    lattice: Lattice, values: torch.Tensor, features: torch.Tensor | None = None
) -> torch.Tensor:
    """Differentiable K·values (N, C) on an unscaled ``lattice`` built from ``features``.

    Pass ``features`` (N, d) only when they need a gradient (learned bandwidths); the
    result is float32, like the lattice's arithmetic. The backward filters again on the
    same lattice (transposed filter; Gaussian-derivative identity for the features).
    """
    if lattice.scaled:
        raise ValueError("lattice: expected an unscaled lattice (its transpose is needed)")
    if features is not None and features.shape[0] != values.shape[0]:
        raise ValueError(
            f"features: expected {values.shape[0]} rows like values, got {features.shape[0]}"
        )
    return _LatticeFilter.apply(values, features, lattice)


def bandwidth_gradient(
    lattice: Lattice,
    features: torch.Tensor,
    values: torch.Tensor,
    grad: torch.Tensor,
    filtered: torch.Tensor,
    filtered_grad: torch.Tensor,
) -> torch.Tensor:
    """A per-point gradient G' (N, d) with sum_i f_ia G'_ia = sum_i f_ia dL/df_ia for every
    dimension a, for L = <grad, K values>: what a per-dimension feature scale (a bandwidth)
    needs. By the Gaussian-derivative identity and <u, Kᵀ w> = <K u, w>,

        sum_i f_ia dL/df_ia = 2 <f_a grad, K(f_a values)> - sum_i f_ia^2 r_i,
        r_i = <grad_i, (K values)_i> + <values_i, (Kᵀ grad)_i>,

    exactly the contraction of ``feature_gradient`` (also on the lattice), with d·C filtered
    channels instead of 2·d·C. G'_ia = 2 grad_i·K(f_a values)_i - f_ia r_i. One feature
    dimension per lattice pass: the cost is linear in the channels anyway, and memory stays
    at a few (N, C) tensors.
    """
    f = features.detach().float()
    r = (grad * filtered).sum(1) + (values * filtered_grad).sum(1)
    columns = []
    for a in range(f.shape[1]):
        fa = f[:, a : a + 1]
        columns.append(2 * (lattice.filter(fa * values) * grad).sum(1) - fa[:, 0] * r)
    return torch.stack(columns, dim=1)


class _ScaleOnlyRowSums(torch.autograd.Function):
    """The kernel normalisers n = K·1 (N,) on a lattice built from ``features`` = raw / θ,
    with the per-dimension contraction sum_i f_ia dL/df_ia of their gradient
    (``bandwidth_gradient`` with one value channel: all d dimensions in one filter)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, lattice: Lattice):
        ctx.lattice = lattice
        ctx.save_for_backward(features)
        return lattice.row_sums

    @staticmethod
    def backward(ctx, grad):
        lattice: Lattice = ctx.lattice
        (features,) = ctx.saved_tensors
        f = centred(features)  # same contraction, less float32 cancellation
        g = grad.float()
        # 2 <f_a g, K f_a> - sum_i f_ia^2 (g_i n_i + (Kᵀ g)_i)
        r = g * lattice.row_sums + lattice.filter(g[:, None], transpose=True)[:, 0]
        term = (lattice.filter(f) * f * g[:, None]).sum(0)
        contraction = 2 * term - torch.mv((f * f).t(), r)
        return scale_gradient(features, contraction), None


class _ScaledFilter(torch.autograd.Function):
    """a ⊙ K(b ⊙ q) on an unscaled lattice: gradients w.r.t. q, b, a and the features.

    Saves q (the loop keeps it anyway), the per-point scales, the features and, when the
    features or ``a`` need a gradient, K(b ⊙ q) (so the backward does not filter it again).
    """

    @staticmethod
    def forward(ctx, q, before, after, features, lattice: Lattice, scale_only: bool = False):
        x = q.float() if before is None else q.float() * before.float()[:, None]
        y = lattice.filter(x)
        out = y if after is None else y * after.float()[:, None]
        keep = (after is not None and ctx.needs_input_grad[2]) or (
            features is not None and ctx.needs_input_grad[3]
        )
        ctx.lattice = lattice
        ctx.scale_only = scale_only
        ctx.save_for_backward(q, before, after, features, y if keep else None)
        return out

    @staticmethod
    def backward(ctx, grad):
        lattice: Lattice = ctx.lattice
        q, before, after, features, y = ctx.saved_tensors
        grad = grad.float().contiguous()
        q32 = q.float()
        need_after = after is not None and ctx.needs_input_grad[2]
        need_features = features is not None and ctx.needs_input_grad[3]
        x = q32 if before is None else q32 * before.float()[:, None]
        grad_after = (grad * y).sum(1) if need_after else None
        gy = grad if after is None else grad * after.float()[:, None]
        dx = lattice.filter(gy, transpose=True)
        grad_q = dx if before is None else dx * before.float()[:, None]
        grad_before = None
        if before is not None and ctx.needs_input_grad[1]:
            grad_before = (dx * q32).sum(1)
        grad_f = None
        if need_features:
            gradient = bandwidth_gradient if ctx.scale_only else feature_gradient
            grad_f = gradient(lattice, features, x, gy, y, dx).to(features.dtype)
        return grad_q.to(q.dtype), grad_before, grad_after, grad_f, None, None
