"""Learnable bandwidths on the lattice: a kernel's message and its deferred bandwidth gradient.

For a lattice kernel on features f = raw / θ (``NormalizedKernel(scale_gradient_only=True)``)
a message is ``logits + T(a ⊙ K(b ⊙ q))`` and a bandwidth θ_a sees only the contraction
sum_i f_ia dL/df_ia. With X = b ⊙ q, Gk = (a ⊙ g) Tᵀ (g the upstream gradient), K = alpha
Pᵀ B P (splat, blur, slice) the Gaussian-derivative identity gives, per message,

    sum_i f_ia dL/df_ia = 2 alpha <P(f_a a g), T B P(f_a b q)> - sum_i f_ia^2 r_i,
    r_i = a_i dL/da_i + b_i dL/db_i,

with dL/da_i = <g_i, T(K X)_i> and b_i dL/db_i = <q_i, (b ⊙ Kᵀ Gk)_i> (the q-gradient).

Only the sum over the messages of one forward pass (the mean-field iterations) matters to
a bandwidth and to the scales a, b, so a message's backward pass computes what the plain
layer's computes (the q-gradient), its shares of r as two row-wise dot products of tables
it holds (b ⊙ dL/db = <q_i, grad_q_i>, a ⊙ dL/da = <g_i, out_i - logits_i>, the message
being the output minus its input logits: no slice) and keeps its q and g
(``DeferredBandwidths``); a node whose output every message takes as an input runs after
all of them (``_BandwidthHub``) and computes the rest for all iterations at once, with the
iterations side by side as (N, T·C) tables: per feature dimension one splat of the q's and
one of the g's weighted by f_a (the moment splats) and one blur. Wide rows cost less per
channel than T narrow passes (a gather's index and weight are read once per entry), the
tables are shared by the kernels on the same points, and the sums are the per-message
ones, so the gradient equals the per-message computation up to float32 rounding.

The moment splats are what remains above the plain layer: 2·d gathers of T·C channels per
entry of the lattice (d = 2 and 5 for the spatial and bilateral kernels), about d/2 times the
plain layer's lattice work, bound by memory traffic. Estimating the contraction at vertex
level instead (vertex means of f and f² in place of the moment splats, a few (M, T·C)
blurs) was measured and rejected: it drops the covariance of q and g with f inside a
vertex's cell, an error of the same order as the contraction itself (cosine with the exact
filter's gradient 0.57-0.99 on 64x64 photo crops, magnitudes about half).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from deepcrf.lattice import Lattice

__all__ = [
    "DeferredBandwidths",
    "bandwidth_hub",
    "bandwidth_message",
    "centred",
    "label_transform",
    "scale_gradient",
]

#: largest side-by-side table (floats) of the deferred computation; more iterations (large
#: batches, many iterations) are processed in chunks of whole iterations
TABLE_BUDGET = 1 << 25


def label_transform(values: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """``values`` (..., L) times a label transform: a number, a (L,) vector or (L, L)."""
    if transform.dim() == 2:
        return (values.reshape(-1, values.shape[-1]) @ transform).view(values.shape)
    return values * transform


def scale_gradient(features: torch.Tensor, contraction: torch.Tensor) -> torch.Tensor:
    """A per-point gradient G (N, d) with sum_i f_ia G_ia = ``contraction`` (d,) for every
    dimension a: all that a per-dimension scale of the features (a bandwidth) sees."""
    f = features.detach().float()
    squares = (f * f).sum(0).clamp_min(torch.finfo(torch.float32).tiny)
    return (f * (contraction / squares)).to(features.dtype)


def centred(features: torch.Tensor) -> torch.Tensor:
    """float32 ``features`` minus their mean: the Gaussian-derivative contraction
    sum_i f_ia dL/df_ia is the same for shifted features (sum_i dL/df_ia = 0), and its
    float32 cancellation much smaller."""
    f = features.detach()
    return (f - f.mean(0, dtype=torch.float64).to(f.dtype)).float()


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) row-wise dot products of two (N, C) tensors (one batched product, no temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class DeferredBandwidths:
    """One kernel's learnable-bandwidth messages of one forward pass and what their backward
    passes leave for the bandwidth gradient (see the module docstring).

    Args:
        lattice: the kernel's unscaled lattice.
        scaled: returns the kernel's (forward, backward) scaled lattices (built on first use).
    """

    def __init__(self, lattice: Lattice, scaled: Callable[[], tuple[Lattice, Lattice]]) -> None:
        self.lattice = lattice
        self.scaled = scaled
        self.count = 0  # messages recorded (their slots)
        self._task: int | None = None
        self._entries: dict[int, tuple[torch.Tensor, ...]] = {}

    def register(self) -> int:
        """A slot for a new message."""
        self.count += 1
        return self.count - 1

    def keep(
        self,
        slot: int,
        x: torch.Tensor,
        grad: torch.Tensor,
        transform: torch.Tensor,
        scaled_before: torch.Tensor,
        scaled_after: torch.Tensor,
    ) -> None:
        """A message's backward: its q and upstream gradient g (N, C), label transform, and
        its shares of b ⊙ dL/db and a ⊙ dL/da (N,). Entries of an earlier backward pass that
        never reached the bandwidths (e.g. ``autograd.grad`` w.r.t. other inputs) are
        dropped."""
        task = torch._C._current_graph_task_id()
        if task != self._task:
            self._task, self._entries = task, {}
        self._entries[slot] = (x, grad, transform, scaled_before, scaled_after)

    def finish(
        self, features: torch.Tensor, before: torch.Tensor | None, after: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(gradient of the features valid under the per-dimension contraction, dL/db,
        dL/da) summed over the kept messages; None where nothing was kept."""
        task = torch._C._current_graph_task_id()
        entries = self._entries if task == self._task else {}
        self._task, self._entries = None, {}
        if not entries:
            return None, None, None
        forward, backward = self.scaled()
        lattice = self.lattice
        # the identity is exact for features shifted by any constant (L depends on their
        # differences only): centred, its two terms cancel ~7x less in float32
        f = centred(features)
        kept = [entries[s] for s in sorted(entries)]
        scaled_grad_before = torch.stack([e[3] for e in kept]).sum(0)  # b ⊙ dL/db
        scaled_grad_after = torch.stack([e[4] for e in kept]).sum(0)  # a ⊙ dL/da
        r = scaled_grad_before + scaled_grad_after  # r_i = a_i dL/da_i + b_i dL/db_i
        grad_before = None if before is None else scaled_grad_before / before.detach().float()
        grad_after = None if after is None else scaled_grad_after / after.detach().float()
        term = self._moment_terms(kept, f, forward, backward)
        contraction = 2 * lattice.alpha * term - torch.mv((f * f).t(), r)
        return scale_gradient(features, contraction), grad_before, grad_after

    def _moment_terms(
        self, entries: list[tuple], f: torch.Tensor, forward: Lattice, backward: Lattice
    ) -> torch.Tensor:
        """The (d,) terms <P(f_a a g), T B P(f_a b q)> summed over the kept messages, in
        chunks of whole messages (the iterations side by side)."""
        lattice = self.lattice
        f_rows = f.t().contiguous()  # per dimension, for the gathers below
        n, d = f.shape
        channels = entries[0][0].shape[1]
        per_chunk = max(1, TABLE_BUDGET // max(1, n * channels))
        index, offsets = lattice.splat_index, lattice.splat_offsets
        term = f.new_zeros(d)
        for start in range(0, len(entries), per_chunk):
            chunk = entries[start : start + per_chunk]
            holder = chunk[0][1]
            q_side = _side_by_side([e[0] for e in chunk], holder)
            g_side = _side_by_side([e[1] for e in chunk], holder)
            transforms = [e[2] for e in chunk]
            for a in range(d):
                # moment splats P(f_a b q) and P(f_a a g) of every iteration at once
                f_entry = f_rows[a].index_select(0, index)
                w_q = f_entry * forward.splat_weight
                w_g = w_q if backward is forward else f_entry.mul_(backward.splat_weight)
                moments_q = F.embedding_bag(
                    index, q_side, offsets, mode="sum", per_sample_weights=w_q
                )
                moments_g = F.embedding_bag(
                    index, g_side, offsets, mode="sum", per_sample_weights=w_g
                )
                blurred = lattice.blur(moments_q)
                del moments_q
                term[a] += _transformed_dot(moments_g, blurred, transforms)
                del blurred, moments_g
        return term


def _transformed_dot(g: torch.Tensor, y: torch.Tensor, transforms: list[torch.Tensor]):
    """sum over blocks k of <g_k, T_k(y_k)> for (M, k·C) side-by-side blocks g_k, y_k."""
    channels = g.shape[1] // len(transforms)
    first = transforms[0]
    if all(t.shape == first.shape and torch.equal(t, first) for t in transforms):
        if first.dim() == 2:  # <g, y @ T> = <T, yᵀ g> over the (M·k, C) rows
            gram = torch.mm(y.view(-1, channels).t(), g.view(-1, channels))
            return (gram * first).sum()
        if first.dim() == 1:
            return torch.dot(g.view(-1), (y.view(-1, channels) * first).view(-1))
        return torch.dot(g.view(-1), y.view(-1)) * first
    total = g.new_zeros(())
    for k, t in enumerate(transforms):
        cols = slice(k * channels, (k + 1) * channels)
        total += _transformed_dot(g[:, cols].contiguous(), y[:, cols].contiguous(), [t])
    return total


def _side_by_side(tensors: list[torch.Tensor], holder: torch.Tensor) -> torch.Tensor:
    """(R, k·C) from k (R, C) tensors. Kernels on the same points see the same q and g of
    every iteration, so the tables are kept with ``holder`` (an upstream gradient, the same
    object for every kernel, freed with it) and the next kernel's hub does not copy them
    again."""
    if len(tensors) == 1:
        return tensors[0].contiguous()
    key = tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)
    kept = holder.__dict__.setdefault("_deepcrf_side_by_side", {})
    if key not in kept:
        kept[key] = torch.cat(tensors, dim=1)
    return kept[key]


class _BandwidthHub(torch.autograd.Function):
    """The bandwidth gradient of one kernel's messages: its output (a number) is an input of
    every message, so its backward runs after all of theirs and returns the gradients of
    the features and the scales that the messages left in ``DeferredBandwidths``."""

    @staticmethod
    def forward(ctx, features, before, after, deferred: DeferredBandwidths):
        ctx.deferred = deferred
        ctx.save_for_backward(features, before, after)
        return features.new_zeros(())

    @staticmethod
    def backward(ctx, _grad):
        features, before, after = ctx.saved_tensors
        grad_f, grad_b, grad_a = ctx.deferred.finish(features, before, after)
        needs = ctx.needs_input_grad
        if before is None or not needs[1]:
            grad_b = None
        elif grad_b is not None:
            grad_b = grad_b.to(before.dtype)
        if after is None or not needs[2]:
            grad_a = None
        elif grad_a is not None:
            grad_a = grad_a.to(after.dtype)
        return grad_f if needs[0] else None, grad_b, grad_a, None


def bandwidth_hub(
    features: torch.Tensor,
    before: torch.Tensor | None,
    after: torch.Tensor | None,
    deferred: DeferredBandwidths,
) -> torch.Tensor:
    """The token every message of ``deferred`` takes (see ``_BandwidthHub``)."""
    return _BandwidthHub.apply(features, before, after, deferred)


class _BandwidthMessage(torch.autograd.Function):
    """``logits + T(a ⊙ K(b ⊙ q))`` on the kernel's scaled lattices: gradients w.r.t. logits,
    q and T here; what the bandwidths and scales need is kept for ``_BandwidthHub``."""

    @staticmethod
    def forward(ctx, logits, q, transform, token, deferred: DeferredBandwidths):
        forward, _ = deferred.scaled()
        x = q.float().contiguous()
        t = torch.as_tensor(transform).to(device=x.device, dtype=torch.float32)
        z = forward.blur(forward.splat_values(x))
        logits = logits.float().contiguous()
        out = forward.slice_values(label_transform(z, t), add=logits)
        ctx.deferred = deferred
        ctx.slot = deferred.register()
        ctx.transform_dtype = torch.as_tensor(transform).dtype
        ctx.save_for_backward(x, z, t, logits, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        deferred: DeferredBandwidths = ctx.deferred
        # detached: q and T are inputs that require grad (gathers on them would keep
        # autograd buffers)
        x, z, t, logits, out = (v.detach() for v in ctx.saved_tensors)
        _, backward = deferred.scaled()
        alpha = deferred.lattice.alpha
        needs = ctx.needs_input_grad
        grad = grad.float().contiguous()
        splatted = backward.splat_values(grad)  # P(a ⊙ g): slice^T grad / alpha
        grad_t = None
        if needs[2]:
            if t.dim() == 2:
                grad_t = z.t() @ splatted
            else:
                grad_t = (z * splatted).sum(0) if t.dim() == 1 else (z * splatted).sum()
            grad_t = (alpha * grad_t).to(ctx.transform_dtype)
        spread = splatted @ t.t() if t.dim() == 2 else splatted * t  # P(Gk)
        del splatted
        blurred = backward.blur(spread, transpose=True)
        del spread
        grad_q = backward.slice_values(blurred)  # b ⊙ Kᵀ Gk
        if needs[3]:  # the rest waits for the hub
            # b ⊙ dL/db = <q_i, grad_q_i>, a ⊙ dL/da = <g_i, a_i T(K X)_i> (the message is
            # out - logits): row dots of tables at hand, no slice
            deferred.keep(ctx.slot, x, grad, t, _row_dot(x, grad_q), _row_dot(grad, out - logits))
        return grad, grad_q.to(x.dtype) if needs[1] else None, grad_t, None, None


def bandwidth_message(
    logits: torch.Tensor,
    values: torch.Tensor,
    transform: float | torch.Tensor,
    token: torch.Tensor,
    deferred: DeferredBandwidths,
) -> torch.Tensor:
    """``logits + T(a ⊙ K(b ⊙ values))`` for a kernel with learnable bandwidths (see the
    module docstring); ``token`` from ``bandwidth_hub``."""
    return _BandwidthMessage.apply(logits, values, transform, token, deferred)
