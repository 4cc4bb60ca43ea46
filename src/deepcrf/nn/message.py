"""The differentiable pairwise message of a dense CRF with learnable parameters.

``CRFMessage`` implements the ``deepcrf.crf.MessagePassing`` protocol, so THE mean-field
loop (``deepcrf.crf.mean_field``) runs it. Its message for marginals Q (N, L) is

    message = -(sum_k w_k ⊙ n_k^a ⊙ K_k(n_k^b ⊙ Q)) @ mu^T

with per-kernel (or per-kernel-and-class, CRF-as-RNN) weights w_k, one compatibility
mu (L, L) shared by the kernels (Potts -I when not learned), and the normalisation scales
n^a, n^b of ``deepcrf.crf`` (symmetric: n^-1/2 both sides, n = K·1).

Two ways to compute it:

* fused (lattice filter, fixed bandwidths; the fast path): the scales are folded into the
  splat/slice weights of each kernel's lattice, the weights and the compatibility act on
  the lattice vertices (far fewer than pixels), and a custom autograd Function
  (``StackedMessage``) computes the backward as the transposed filters, keeping only
  the blurred vertex values of each iteration;
* generic (exact filter, or learned bandwidths): plain tensor ops around
  ``lattice_filter`` / ``exact_filter``, so autograd also reaches the features (bandwidths)
  through the kernel and through the normalisation n = K·1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from deepcrf.crf import NORMALIZATIONS, normalization_scales
from deepcrf.exact import exact_filter
from deepcrf.lattice import Lattice, build_lattice
from deepcrf.nn.filtering import ScaledLatticeFilter, lattice_filter

__all__ = ["CRFMessage", "ScaledKernel", "StackedMessage", "scaled_kernel"]


@dataclass(frozen=True)
class ScaledKernel:
    """A normalised kernel folded into its lattice, for the forward and the backward pass.

    ``forward`` computes diag(a) K diag(b) (b, a the normalisation scales before and after
    filtering), ``backward`` its transpose diag(b) Kᵀ diag(a) (with the blur run in reverse
    order); ``alpha`` is the lattice's slice constant (slice = alpha · splatᵀ), needed to
    turn a splat of the upstream gradient into the slice's transpose.
    """

    forward: Lattice
    backward: Lattice
    alpha: float

    def blur_transposed(self, values: torch.Tensor) -> torch.Tensor:
        # the scales live in splat/slice only: the blur of a scaled lattice is the unscaled one
        return replace(self.backward, scaled=False).blur(values, transpose=True)


def scaled_kernel(lattice: Lattice, normalization: str) -> ScaledKernel:
    """Fold ``normalization`` (n = K·1, computed on ``lattice``) into an unscaled lattice."""
    if lattice.scaled:
        raise ValueError("lattice: expected an unscaled lattice")
    if len(lattice.blocks) != 2:
        raise ValueError("lattice: expected a single (not stacked) lattice")
    before, after = normalization_scales(lattice.row_sums, normalization)
    forward = lattice.scale(before, after)
    backward = forward if before is after else lattice.scale(after, before)
    return ScaledKernel(forward, backward, 1.0 / (1.0 + 2.0 ** -(lattice.num_axes - 1)))


class StackedMessage(torch.autograd.Function):
    """logits + sum_k slice_k(T_k(blur_k(splat_k(q)))) on normalised (scaled) lattices.

    T_k acts on the lattice vertices: V -> (V ⊙ w_k) @ transform, with transform = -mu^T
    (or the identity when None). The backward filters the upstream gradient with the
    transposed kernels; only the blurred vertex values of each kernel are kept.
    """

    @staticmethod
    def forward(ctx, logits, q, weights, transform, kernels: tuple[ScaledKernel, ...]):
        q = q.float().contiguous()
        out = logits.float()
        blurred = []
        for k, kernel in enumerate(kernels):
            lat = kernel.forward
            values = lat.blur(lat.splat_values(q))
            blurred.append(values)
            mixed = _mix(values, weights[k])
            if transform is not None:
                mixed = mixed @ transform
            sliced = lat.slice_values(mixed)
            out = sliced.add_(out) if k == 0 else out.add_(sliced)
        ctx.kernels = kernels
        ctx.save_for_backward(weights, transform, *blurred)
        return out

    @staticmethod
    def backward(ctx, grad):
        kernels: tuple[ScaledKernel, ...] = ctx.kernels
        weights, transform, *blurred = ctx.saved_tensors
        grad = grad.float().contiguous()
        grad_q = grad_t = None
        grad_w = [] if ctx.needs_input_grad[2] else None
        for k, kernel in enumerate(kernels):
            splatted = kernel.backward.splat_values(grad)  # = slice_k^T grad / alpha_k
            splatted_t = splatted if transform is None else splatted @ transform.t()
            if ctx.needs_input_grad[1]:
                spread = kernel.blur_transposed(_mix_transposed(splatted_t, weights[k]))
                sliced = kernel.backward.slice_values(spread)
                grad_q = sliced if grad_q is None else grad_q.add_(sliced)
            if grad_w is not None:
                if weights.dim() == 3:  # mixed = V W^T: dL/dW = G^T V
                    grad_w.append(kernel.alpha * splatted_t.t() @ blurred[k])
                else:
                    grad_w.append(kernel.alpha * (splatted_t * blurred[k]).sum(0))
            if transform is not None and ctx.needs_input_grad[3]:
                term = kernel.alpha * _mix(blurred[k], weights[k]).t() @ splatted
                grad_t = term if grad_t is None else grad_t + term
        if grad_w is not None:
            grad_w = torch.stack(grad_w)
        return grad, grad_q, grad_w, grad_t, None


def _mix(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Kernel weights applied to (M, L) filtered values: per class (L,) or full (L, L) W,
    whose rows are the output labels (values @ W^T)."""
    return values * weight if weight.dim() == 1 else values @ weight.t()


def _mix_transposed(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return grad * weight if weight.dim() == 1 else grad @ weight


class CRFMessage:
    """Pairwise message of learnable dense-CRF kernels for one batch (see module docstring).

    Args:
        features: per kernel, (N, d) features already divided by the bandwidths; they may
            require grad (learned bandwidths).
        weights: (K, L) kernel weights (a per-kernel weight expanded over the labels), or
            (K, L, L) full weight matrices W_k (CRF-as-RNN's released model), applied as
            (K_k Q) @ W_k^T.
        compat: (L, L) compatibility mu, or None for Potts (mu = -I).
        lattices: per kernel, a prebuilt unscaled lattice of ``features`` or None.
        prepared: per kernel, a ready ``ScaledKernel`` (e.g. cached) or None.
        fused: allow the fast path (False forces the generic one, for checks).
        segments: start offsets of the images (length B+1).
        filter: "lattice" or "exact".
    """

    def __init__(
        self,
        features: Sequence[torch.Tensor],
        weights: torch.Tensor,
        compat: torch.Tensor | None,
        segments: Sequence[int],
        normalization: str = "symmetric",
        filter: str = "lattice",
        lattices: Sequence[Lattice | None] | None = None,
        prepared: Sequence[ScaledKernel | None] | None = None,
        fused: bool = True,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if filter not in ("lattice", "exact"):
            raise ValueError(f"filter: expected 'lattice' or 'exact', got {filter!r}")
        if weights.dim() not in (2, 3) or weights.shape[0] != len(features):
            raise ValueError(
                f"weights: expected ({len(features)}, L) or ({len(features)}, L, L), "
                f"got {tuple(weights.shape)}"
            )
        self.features = list(features)
        self.weights = weights
        self.transform = None if compat is None else -compat.t()
        self.segments = list(segments)
        self.filter = filter
        lattices = list(lattices) if lattices is not None else [None] * len(self.features)
        prepared = list(prepared) if prepared is not None else [None] * len(self.features)
        learned_features = any(f.requires_grad for f in self.features)
        self.lattices: list[Lattice | None] = []
        self.scales = []
        self.kernels: tuple[ScaledKernel, ...] | None = None
        if fused and filter == "lattice" and not learned_features:
            self.kernels = tuple(
                ready or scaled_kernel(lattice or build_lattice(f, self.segments), normalization)
                for f, lattice, ready in zip(self.features, lattices, prepared)
            )
            return
        for f, lattice in zip(self.features, lattices):
            if filter == "lattice":
                lattice = lattice or build_lattice(f.detach(), self.segments)
                grad_f = f if f.requires_grad else None
                ones = f.new_ones(f.shape[0], 1, dtype=torch.float32)
                norm = lattice_filter(lattice, ones, grad_f)[:, 0]
            else:
                norm = exact_filter(f, f.new_ones(f.shape[0], 1), self.segments)[:, 0]
            self.lattices.append(lattice)
            self.scales.append(normalization_scales(norm, normalization))

    @property
    def fused(self) -> bool:
        """Whether the fast stacked-lattice path is used."""
        return self.kernels is not None

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """The pairwise logits for marginals ``q`` (N, L)."""
        return self.add_message(torch.zeros_like(q), q)

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, L) plus the pairwise message of ``q`` (N, L), differentiable."""
        if not self.features:
            return logits + 0.0 * q
        if self.kernels is not None:
            return StackedMessage.apply(logits, q, self.weights, self.transform, self.kernels)
        total = None
        for k, (f, lattice, (before, after)) in enumerate(
            zip(self.features, self.lattices, self.scales)
        ):
            if lattice is not None:
                w = self.weights[k]
                y = ScaledLatticeFilter.apply(
                    q,
                    before,
                    after,
                    w if w.dim() == 1 else w.new_ones(w.shape[0]),
                    f if f.requires_grad else None,
                    lattice,
                )
                if w.dim() == 2:
                    y = _mix(y, w)
            else:
                x = q if before is None else q * before[:, None]
                y = exact_filter(f, x, self.segments)
                if after is not None:
                    y = y * after[:, None]
                y = _mix(y, self.weights[k])
            total = y if total is None else total + y
        if self.transform is not None:
            total = total @ self.transform
        return logits + total
