"""The differentiable pairwise message of a dense CRF with learnable parameters.

``CRFMessage`` implements the ``deepcrf.crf.MessagePassing`` protocol, so THE mean-field
loop (``deepcrf.crf.mean_field``) runs it. Its message for marginals Q (N, L) is

    message = -(sum_k w_k ⊙ n_k^a ⊙ K_k(n_k^b ⊙ Q)) @ mu^T

with per-kernel (or per-kernel-and-class, CRF-as-RNN) weights w_k, one compatibility
mu (L, L) shared by the kernels (Potts -I when not learned), and the normalisation scales
n^a, n^b of ``deepcrf.crf`` (symmetric: n^-1/2 both sides, n = K·1).

Two ways to compute it:

* fused (lattice filter, fixed bandwidths; the fast path): the scales are folded into the
  splat/slice matrices of one stacked lattice, the weights and the compatibility act on
  the lattice vertices (far fewer than pixels), and a custom autograd Function
  (``StackedMessage``) computes the backward as the transposed stacked filter, keeping only
  the blurred vertex values of each iteration;
* generic (exact filter, or learned bandwidths): plain tensor ops around
  ``lattice_filter`` / ``exact_filter``, so autograd also reaches the features (bandwidths)
  through the kernel and through the normalisation n = K·1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from deepcrf.crf import NORMALIZATIONS
from deepcrf.exact import exact_filter
from deepcrf.lattice import Lattice, build_lattice, stack_lattices
from deepcrf.nn.filtering import lattice_filter

__all__ = ["CRFMessage", "StackedMessage"]

_EPS = 1e-20


@dataclass
class _Stack:
    """Stacked scaled lattices for the forward and the transposed (backward) filter."""

    forward: Lattice
    backward: Lattice
    alphas: tuple[float, ...]  # slice constant of each block: slice = alpha * splat^T


def _blur_transposed(stack: Lattice, values: torch.Tensor) -> torch.Tensor:
    # scales live in splat/slice only; the blur of a scaled stack is the unscaled blur
    return replace(stack, scaled=False).blur(values, transpose=True)


class StackedMessage(torch.autograd.Function):
    """logits + slice(T(blur(splat(q)))) on a stacked scaled lattice, T the vertex transform.

    T on block k: V -> (V ⊙ w_k) @ transform (transform = -mu^T, or identity when None).
    """

    @staticmethod
    def forward(ctx, logits, q, weights, transform, stack: _Stack):
        fwd = stack.forward
        blurred = fwd.blur(fwd.splat_values(q))
        mixed = torch.empty_like(blurred)
        for k, (start, stop) in enumerate(zip(fwd.blocks, fwd.blocks[1:])):
            mixed[start:stop] = blurred[start:stop] * weights[k]
        if transform is not None:
            mixed = mixed @ transform
        ctx.stack = stack
        ctx.save_for_backward(blurred, weights, transform)
        return torch.sparse.addmm(logits.float(), fwd.slice, mixed)

    @staticmethod
    def backward(ctx, grad):
        stack: _Stack = ctx.stack
        blurred, weights, transform = ctx.saved_tensors
        bwd = stack.backward
        grad = grad.float().contiguous()
        splatted = bwd.splat_values(grad)  # = slice_fwd^T grad / alpha, per block
        if transform is not None:
            splatted_t = splatted @ transform.t()
        else:
            splatted_t = splatted
        grad_q = grad_w = grad_t = None
        blocks = list(zip(bwd.blocks, bwd.blocks[1:]))
        if ctx.needs_input_grad[1]:
            scaled = torch.empty_like(splatted_t)
            for k, (start, stop) in enumerate(blocks):
                scaled[start:stop] = splatted_t[start:stop] * weights[k]
            grad_q = torch.sparse.mm(bwd.slice, _blur_transposed(bwd, scaled))
        if ctx.needs_input_grad[2]:
            grad_w = torch.stack(
                [
                    alpha * (splatted_t[start:stop] * blurred[start:stop]).sum(0)
                    for alpha, (start, stop) in zip(stack.alphas, blocks)
                ]
            )
        if transform is not None and ctx.needs_input_grad[3]:
            grad_t = sum(
                alpha * (blurred[start:stop] * weights[k]).t() @ splatted[start:stop]
                for k, (alpha, (start, stop)) in enumerate(zip(stack.alphas, blocks))
            )
        return grad, grad_q, grad_w, grad_t, None


def _scales(norm: torch.Tensor, normalization: str):
    """(before, after) per-point scales from the row sums ``norm`` (differentiable)."""
    if normalization == "symmetric":
        s = torch.rsqrt(norm + _EPS)
        return s, s
    if normalization == "before":
        return 1.0 / (norm + _EPS), None
    if normalization == "after":
        return None, 1.0 / (norm + _EPS)
    return None, None


class CRFMessage:
    """Pairwise message of learnable dense-CRF kernels for one batch (see module docstring).

    Args:
        features: per kernel, (N, d) features already divided by the bandwidths; they may
            require grad (learned bandwidths).
        weights: (K, L) kernel weights (a per-kernel weight expanded over the labels).
        compat: (L, L) compatibility mu, or None for Potts (mu = -I).
        lattices: per kernel, a prebuilt unscaled lattice of ``features`` or None.
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
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if filter not in ("lattice", "exact"):
            raise ValueError(f"filter: expected 'lattice' or 'exact', got {filter!r}")
        if weights.dim() != 2 or weights.shape[0] != len(features):
            raise ValueError(
                f"weights: expected ({len(features)}, L), got {tuple(weights.shape)}"
            )
        self.features = list(features)
        self.weights = weights
        self.transform = None if compat is None else -compat.t()
        self.segments = list(segments)
        self.filter = filter
        lattices = list(lattices) if lattices is not None else [None] * len(self.features)
        self.lattices: list[Lattice | None] = []
        self.scales = []
        for f, lattice in zip(self.features, lattices):
            if filter == "lattice":
                lattice = lattice or build_lattice(f.detach(), self.segments)
                grad_f = f if f.requires_grad else None
                norm = lattice_filter(lattice, f.new_ones(f.shape[0], 1, dtype=torch.float32),
                                      grad_f)[:, 0]
            else:
                norm = exact_filter(f, f.new_ones(f.shape[0], 1), self.segments)[:, 0]
            self.lattices.append(lattice)
            self.scales.append(_scales(norm, normalization))
        learned_features = any(f.requires_grad for f in self.features)
        self._stack = (
            self._build_stack()
            if filter == "lattice" and self.features and not learned_features
            else None
        )

    def _build_stack(self) -> _Stack:
        fwd, bwd, alphas = [], [], []
        for lattice, (before, after) in zip(self.lattices, self.scales):
            before = None if before is None else before.detach()
            after = None if after is None else after.detach()
            fwd.append(lattice.scale(before, after))
            bwd.append(lattice.scale(after, before))
            alphas.append(1.0 / (1.0 + 2.0 ** -(lattice.num_axes - 1)))
        forward = stack_lattices(fwd)
        same = all(
            (a is b) or (a is None and b is None)
            for a, b in self.scales
        )
        backward = forward if same else stack_lattices(bwd)
        return _Stack(forward, backward, tuple(alphas))

    @property
    def fused(self) -> bool:
        """Whether the fast stacked-lattice path is used."""
        return self._stack is not None

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """The pairwise logits for marginals ``q`` (N, L)."""
        return self.add_message(torch.zeros_like(q), q)

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, L) plus the pairwise message of ``q`` (N, L), differentiable."""
        if not self.features:
            return logits + 0.0 * q
        if self._stack is not None:
            return StackedMessage.apply(logits, q, self.weights, self.transform, self._stack)
        total = None
        for k, (f, lattice, (before, after)) in enumerate(
            zip(self.features, self.lattices, self.scales)
        ):
            x = q if before is None else q * before[:, None]
            if lattice is not None:
                y = lattice_filter(lattice, x, f if f.requires_grad else None)
            else:
                y = exact_filter(f, x, self.segments)
            if after is not None:
                y = y * after[:, None]
            y = y * self.weights[k]
            total = y if total is None else total + y
        if self.transform is not None:
            total = total @ self.transform
        return logits + total
