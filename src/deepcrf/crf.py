"""Fully connected CRF with Gaussian pairwise kernels and THE mean-field loop.

Model (Krähenbühl & Koltun 2011, as in pydensecrf): the energy of a labelling is
sum_i U_i(x_i) + sum_k sum_{i,j} mu_k(x_i, x_j) k_k(f_i^k, f_j^k) with Gaussian kernels
k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2) on features already divided by their bandwidths.
Mean field iterates Q_i ∝ exp(-U_i - sum_k mu_k · K_k Q), i.e. in logits (higher = more
likely) ``logits = unary_logits - sum_k filter_k(Q) @ mu_k^T``.

Compatibility ``mu`` follows pydensecrf's conventions:
  * a number ``w`` is Potts: mu = -w·I, so equal labels attract with weight w;
  * a vector ``v`` (L,) is a diagonal mu = diag(v) (negative entries attract);
  * a matrix (L, L) is used as mu as given (pydensecrf symmetrises it; we do not, so
    asymmetric compatibilities are possible; the pydensecrf shim symmetrises).
Normalisation of each kernel (pydensecrf's NORMALIZE_*): with n = K·1 (row sums),
"symmetric" filters n^-1/2 ⊙ K (n^-1/2 ⊙ Q), "before" K (n^-1 ⊙ Q), "after"
n^-1 ⊙ K Q and "none" K Q.

Everything here works on flattened points: tensors of shape (N, ·), where a batch of
images is the concatenation of their pixels and ``segments`` marks where each image
starts, so kernels never connect two images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from deepcrf.kernel import FILTERS, NORMALIZATIONS, NormalizedKernel, normalization_scales
from deepcrf.lattice import Lattice, stack_lattices
from deepcrf.threads import adaptive, recheck

__all__ = [
    "NORMALIZATIONS",
    "Kernel",
    "MessagePassing",
    "NormalizedKernel",
    "Pairwise",
    "SideBySide",
    "compat_matrix",
    "mean_field",
    "mean_field_step",
    "normalization_scales",
]


@dataclass
class Kernel:
    """One Gaussian pairwise term.

    Attributes:
        features: (N, d) per-point features divided by their bandwidths (may require grad:
            learnable bandwidths).
        compat: Potts weight (number), diagonal (L,) or full (L, L) compatibility; tensors
            may require grad (learnable weights and compatibilities).
        normalization: one of ``NORMALIZATIONS``.
        lattice: an already built lattice for ``features`` (reused instead of rebuilding).
        scale_gradient_only: see ``NormalizedKernel`` (features = raw / bandwidths).
    """

    features: torch.Tensor
    compat: float | torch.Tensor = 1.0
    normalization: str = "symmetric"
    lattice: Lattice | None = None
    scale_gradient_only: bool = False


def compat_matrix(compat: float | torch.Tensor, num_labels: int) -> torch.Tensor:
    """The (L, L) compatibility mu that ``compat`` stands for (see module docstring)."""
    if isinstance(compat, (int, float)):
        return -float(compat) * torch.eye(num_labels)
    compat = torch.as_tensor(compat)
    if compat.dim() == 0:
        return -compat * torch.eye(num_labels, dtype=compat.dtype, device=compat.device)
    if compat.dim() == 1 and compat.shape[0] == num_labels:
        return torch.diag(compat)
    if compat.dim() == 2 and compat.shape == (num_labels, num_labels):
        return compat
    raise ValueError(
        f"compat: expected a number, a ({num_labels},) vector or a ({num_labels}, {num_labels}) "
        f"matrix, got shape {tuple(compat.shape)}"
    )


def _potts_weight(compat: float | torch.Tensor) -> float | None:
    """The Potts weight of a fixed scalar compatibility, else None."""
    if isinstance(compat, (int, float)):
        return float(compat)
    if isinstance(compat, torch.Tensor) and compat.dim() == 0 and not compat.requires_grad:
        return float(compat)
    return None


def _label_transform(compat: float | torch.Tensor, num_labels: int) -> torch.Tensor:
    """T with message = (K Q) @ T: -mu^T, or -v for a diagonal compatibility v (L,)."""
    if isinstance(compat, torch.Tensor) and compat.dim() == 1:
        return -compat
    return -compat_matrix(compat, num_labels).t()


def _transform(values: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    return values * transform if transform.dim() == 1 else values @ transform


class Pairwise:
    """All pairwise kernels of a dense CRF on given features: built once, applied per iteration.

    The message for marginals Q (N, L) is ``-sum_k (K_k Q) @ mu_k^T`` with K_k the
    normalised kernels (``NormalizedKernel``). With ``filter="lattice"`` the kernels on
    fixed features are stacked into one block lattice with their normalisation (and Potts
    weights) folded into the splat/slice weights, so an iteration costs one splat, one blur
    and one slice whatever the number of kernels, and compatibilities act on the few lattice
    vertices. When the marginals or a compatibility need a gradient, a custom autograd
    Function computes the backward the same way (one transposed splat/blur/slice for all
    kernels). Kernels on learnable features, and ``filter="exact"``, go through
    ``NormalizedKernel.apply`` and autograd.
    """

    def __init__(
        self,
        kernels: Sequence[Kernel],
        num_labels: int,
        segments: Sequence[int] | None = None,
        filter: str = "lattice",
        stack: bool = True,
    ) -> None:
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels: expected >= 1, got {num_labels}")
        self.kernels = list(kernels)
        self.num_labels = num_labels
        self.filter = filter
        self.segments = tuple(segments) if segments is not None else None
        n = None
        for k, kernel in enumerate(self.kernels):
            if kernel.normalization not in NORMALIZATIONS:
                raise ValueError(
                    f"kernels[{k}].normalization: expected one of {NORMALIZATIONS}, "
                    f"got {kernel.normalization!r}"
                )
            if kernel.features.dim() != 2:
                raise ValueError(
                    f"kernels[{k}].features: expected (N, d), got {tuple(kernel.features.shape)}"
                )
            if n is not None and kernel.features.shape[0] != n:
                raise ValueError(f"kernels[{k}].features: expected {n} points like kernel 0")
            n = kernel.features.shape[0]
            compat_matrix(kernel.compat, num_labels)  # validates the shape
        self.num_points = n
        self.normalized = [
            NormalizedKernel(
                k.features, k.normalization, self.segments, filter, k.lattice, k.scale_gradient_only
            )
            for k in self.kernels
        ]
        stacked = [
            i
            for i, nk in enumerate(self.normalized)
            if stack and nk.lattice is not None and not nk.learnable
        ]
        self._generic = [i for i in range(len(self.kernels)) if i not in stacked]
        self._stack = None
        if stacked:
            self._stack = _Stack(
                [self.normalized[i] for i in stacked],
                [self.kernels[i].compat for i in stacked],
                num_labels,
            )

    @cached_property
    def message_bound(self) -> float:
        """Every message entry lies in [-bound, bound] for marginals in [0, 1]."""
        if not self.kernels or not self.num_points:
            return 0.0
        bound = torch.zeros(self.num_points)
        for kernel, nk in zip(self.kernels, self.normalized):
            mu = compat_matrix(kernel.compat, self.num_labels).detach()
            amplify = float(mu.abs().sum(1).max())
            bound += amplify * nk.row_sums().float().cpu()
        return float(bound.max())

    def release_kernels(self) -> None:
        """For inference from here on: keep only what messages without gradients use (the
        block stack of the lattice kernels on fixed features, the message bound, computed
        now) and drop those kernels' own lattices, scales and features, which the stack
        copied (the caller must drop its references too for the memory to go). Messages
        that need a gradient through the stack raise afterwards."""
        if self._stack is None:
            return
        self.message_bound  # noqa: B018 (computed while the kernels are here)
        self._stack.release()
        generic = set(self._generic)
        self.kernels = [k if i in generic else None for i, k in enumerate(self.kernels)]
        self.normalized = [k if i in generic else None for i, k in enumerate(self.normalized)]

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """The pairwise logits -sum_k filter_k(q) @ mu_k^T for marginals ``q`` (N, L)."""
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return self.add_message(torch.zeros_like(q, dtype=dtype), q)

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` + the pairwise message of ``q``, as a new (N, L) tensor (float32, or
        float64 with exact filtering of float64 inputs); differentiable."""
        out = logits if logits.dtype == torch.float64 else logits.float()
        if self._stack is not None:
            out = self._stack.add_message(out, q)
        for i in self._generic:
            compat = self.kernels[i].compat
            weight = _potts_weight(compat)
            transform = weight if weight is not None else _label_transform(compat, self.num_labels)
            out = self.normalized[i].add_message(out, q, transform)
        return logits.clone() if out is logits else out


class _Stack:
    """The lattice kernels on fixed features: each kernel's forward and backward scaled
    lattices and label transform (None where a Potts weight is folded into the slice), and
    their block stack for the no-gradient path."""

    def __init__(self, kernels: list[NormalizedKernel], compats: list, num_labels: int) -> None:
        self.forward, self.transforms = [], []
        self._kernels = kernels
        self._weights = [_potts_weight(compat) for compat in compats]
        for kernel, compat, weight in zip(kernels, compats, self._weights):
            self.forward.append(kernel.scaled_lattice(weight))
            transform = None
            if weight is None:
                transform = _label_transform(compat, num_labels)
                transform = transform.to(torch.float32).to(kernel.lattice.device)
            self.transforms.append(transform)
        self.alphas = [lattice.alpha for lattice in self.forward]

    @cached_property
    def backward(self) -> list[Lattice]:
        """Each kernel's transposed lattice, built when a backward pass first needs it."""
        self._check_kept()
        return [k.scaled_lattice(w, transpose=True) for k, w in zip(self._kernels, self._weights)]

    @cached_property
    def stacked(self) -> Lattice:
        """All kernels as one block lattice: one splat, blur and slice per message."""
        return stack_lattices(self.forward)

    def release(self) -> None:
        """Keep the block stack only (see ``Pairwise.release_kernels``)."""
        self.stacked  # noqa: B018 (built before its parts go)
        self.forward, self._kernels = None, None

    def _check_kept(self) -> None:
        if self._kernels is None:
            raise RuntimeError(
                "pairwise: its kernels were released for inference (release_kernels); "
                "messages that need a gradient need a Pairwise that keeps them"
            )

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad
            or logits.requires_grad
            or any(t is not None and t.requires_grad for t in self.transforms)
        )
        if needs_grad:
            self._check_kept()
            return _StackedMessage.apply(logits, q, self, *self.transforms)
        matrices = [
            None if t is None else (torch.diag(t) if t.dim() == 1 else t) for t in self.transforms
        ]
        return self.stacked.filter_add(q, logits, transforms=matrices)


class _StackedMessage(torch.autograd.Function):
    """logits + sum_k slice_k(T_k(blur_k(splat_k(q)))) on the normalised lattices, with the
    backward as the transposed filters: per kernel one splat, transposed blur and slice of
    the upstream gradient, plus the label transforms' small vertex products. Only the
    blurred vertex values are kept between the passes; kernels are processed one at a time
    (accumulating in place), which keeps the peak memory at one kernel's vertex values."""

    @staticmethod
    def forward(ctx, logits, q, stack: _Stack, *transforms):
        q = q.float().contiguous()
        out = None
        blurred = []
        for lattice, t in zip(stack.forward, transforms):
            values = lattice.blur(lattice.splat_values(q))
            blurred.append(values)
            mixed = values if t is None else _transform(values, t)
            if out is None:
                out = lattice.slice_values(mixed, add=logits)
            else:
                out.add_(lattice.slice_values(mixed))
        ctx.stack = stack
        ctx.save_for_backward(*blurred, *transforms)
        return out

    @staticmethod
    def backward(ctx, grad):
        stack: _Stack = ctx.stack
        count = len(stack.forward)
        saved = ctx.saved_tensors
        blurred, transforms = saved[:count], saved[count:]
        grad = grad.float().contiguous()
        grad_q, grads = None, []
        for k, (lattice, t, alpha) in enumerate(zip(stack.backward, transforms, stack.alphas)):
            splatted = lattice.splat_values(grad)  # = slice_k^T grad / alpha_k
            if t is None or not ctx.needs_input_grad[3 + k]:
                grads.append(None)
            elif t.dim() == 1:
                grads.append(alpha * (splatted * blurred[k]).sum(0))
            else:
                grads.append(alpha * blurred[k].t() @ splatted)
            if ctx.needs_input_grad[1]:
                spread = (
                    splatted if t is None else (splatted * t if t.dim() == 1 else splatted @ t.t())
                )
                sliced = lattice.slice_values(lattice.blur(spread, transpose=True))
                grad_q = sliced if grad_q is None else grad_q.add_(sliced)
        return grad, grad_q, None, *grads


class SideBySide:
    """R mean-field runs with the same kernels on the same points as one message passing.

    ``pairwise`` is built for R*L labels (per-run compatibilities as a block-diagonal or
    diagonal compatibility, e.g. a diagonal vector of each run's weights repeated L times).

    The runs' marginals arrive as (N*R, L) rows, point-major (row p*R + r is run r at point
    p), which is the same memory as (N, R*L): filtered side by side as R*L channels (Potts
    kernels act on each channel alone), all runs share one lattice and one splat/blur/slice
    per iteration, with no copy; the mean-field softmax over L still sees each run alone.

    Marginals sum to 1 over each run's labels, so with Potts kernels (messages linear and
    label by label) the last label's message is the message of all-ones minus the others':
    m_L = m(1) - sum_{l<L} m_l. Where filtering R*(L-1) channels is cheaper than R*L
    (``Lattice.filter_cost``: 2 runs of 3 labels filter 4 channels instead of 6 padded to
    8), only the first L-1 labels of each run are filtered and the last is derived, equal
    up to float32 rounding. ``add_message`` then expects marginals (rows summing to 1 per
    run), which is what ``mean_field`` passes.
    """

    def __init__(self, pairwise: Pairwise, runs: int) -> None:
        self.pairwise = pairwise
        self.runs = runs
        self._wide: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ones_message: torch.Tensor | None = None  # m(1): (N, 1)
        self._kept: tuple | None = None  # (logits, version, (kept unaries, constant) or None)
        self._matrices: tuple | None = None  # (key, take, spread), see _selections

    @property
    def message_bound(self) -> float | None:
        """The pairwise model's bound, or None for few channels (R*L <= 16): the bound
        costs a filter per kernel, more than ``mean_field``'s check of each iteration's
        logits (one pass over N*R*L values) when the runs are narrow."""
        if self.pairwise.num_labels <= _CHECK_CHANNELS:
            return None
        return self.pairwise.message_bound

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` (N*R, L) plus the pairwise message of the marginals ``q`` (N*R, L)."""
        if self._derives_last_label(logits, q):
            kept = self._kept_unaries(logits, q.shape[0] // self.runs)
            if kept is not None:
                return self._reduced_message(logits, q, *kept)
        n, width = q.shape[0] // self.runs, q.shape[1] * self.runs
        # the same view of the same unaries every iteration: the lattice keeps its fused
        # slice table (keyed by the tensor) instead of copying the unaries again
        if self._wide is None or self._wide[0] is not logits:
            self._wide = (logits, logits.view(n, width))
        out = self.pairwise.add_message(self._wide[1], q.view(n, width))
        return out.view(q.shape)

    def _derives_last_label(self, logits: torch.Tensor, q: torch.Tensor) -> bool:
        """Whether to filter L-1 labels per run and derive the last (see the class)."""
        stack, labels = self.pairwise._stack, q.shape[1]
        if stack is None or self.pairwise._generic or labels < 2:
            return False
        if any(t is not None for t in stack.transforms):  # Potts weights only
            return False
        if torch.is_grad_enabled() and (q.requires_grad or logits.requires_grad):
            return False
        if q.dtype != torch.float32 or logits.dtype != torch.float32 or q.device.type != "cpu":
            return False  # measured (and exact copies through BLAS checked) on the CPU only
        lattice = stack.stacked
        full = lattice.filter_cost(self.runs * labels)
        return lattice.filter_cost(self.runs * (labels - 1)) < full

    def _reduced_message(
        self, logits: torch.Tensor, q: torch.Tensor, unary: torch.Tensor, constant: torch.Tensor
    ) -> torch.Tensor:
        """``add_message`` filtering L-1 labels per run; the last label's logits are
        u_L + m(1) + sum_{l<L} u_l - sum_{l<L} out_l = constant - sum_{l<L} out_l.

        Taking the kept labels out and spreading the result are products with 0/1/-1
        matrices (exact for the copied entries; BLAS is several times faster than torch's
        strided copies and sums over such short rows); the constants are then added to
        the last labels in place (``addmm`` with them as its input took 3-4x as long on one
        thread, copying them all first; same bits)."""
        runs, labels = self.runs, q.shape[1]
        n = q.shape[0] // runs
        take, spread = self._selections(labels, q.device)
        out = self.pairwise.add_message(unary, torch.mm(q.view(n, runs * labels), take))
        full = torch.mm(out, spread)
        full.view(n, runs, labels)[:, :, -1].add_(constant)
        return full.view(n * runs, labels)

    def _selections(self, labels: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(take (R*L, R*K): the first K = L-1 labels of each run; spread (R*K, R*L): each
        kept label to its place and -1 to its run's last label)."""
        key = (labels, str(device))
        if self._matrices is None or self._matrices[0] != key:
            kept, runs = labels - 1, self.runs
            take = torch.zeros(runs * labels, runs * kept)
            spread = torch.zeros(runs * kept, runs * labels)
            for r in range(runs):
                for k in range(kept):
                    take[r * labels + k, r * kept + k] = 1.0
                    spread[r * kept + k, r * labels + k] = 1.0
                    spread[r * kept + k, r * labels + kept] = -1.0
            self._matrices = (key, take.to(device), spread.to(device))
        return self._matrices[1:]

    def _kept_unaries(self, logits: torch.Tensor, n: int) -> tuple[torch.Tensor, ...] | None:
        """(the first L-1 unaries of each run (N, R*(L-1)), the last labels' constants
        (N, R), see ``_reduced_message``), made once per unary tensor (the same every
        iteration); None when some unary is infinite (an impossible label: -inf - -inf has
        no value), which keeps every label filtered."""
        cached = self._kept
        if cached is not None and cached[0] is logits and cached[1] == logits._version:
            return cached[2]
        self._kept = (logits, logits._version, None)
        if not bool(torch.isfinite(logits).all()):
            return None
        runs, labels = self.runs, logits.shape[1]
        if self._ones_message is None:
            with torch.no_grad():
                ones = logits.new_ones(n, 1)
                self._ones_message = self.pairwise.message(ones)  # m(1), the same for every run
        per_run = logits.view(n, runs, labels)
        unary = per_run[:, :, :-1].reshape(n, runs * (labels - 1))
        constant = per_run.sum(2) + self._ones_message  # (N, R)
        self._kept = (logits, logits._version, (unary, constant))
        return unary, constant


_CHECK_CHANNELS = 16  # side-by-side runs this narrow skip the message bound


class MessagePassing(Protocol):
    """What the mean-field loop needs from a pairwise model: ``Pairwise`` (Gaussian kernels,
    fixed or learnable) or ``deepcrf.contextual``'s general pairwise tables."""

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, L) plus the pairwise message of the marginals ``q`` (N, L)."""
        ...


def mean_field_step(unary_logits: torch.Tensor, q: torch.Tensor, pairwise: MessagePassing):
    """One parallel mean-field update; returns (new marginals, their logits)."""
    logits = pairwise.add_message(unary_logits, q)
    return torch.softmax(logits, dim=1), logits


@adaptive
def mean_field(
    unary_logits: torch.Tensor,
    pairwise: MessagePassing,
    iterations: int = 10,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    return_logits: bool = False,
    checkpoint: bool = False,
):
    """Run ``iterations`` mean-field updates from softmax(unary_logits): THE loop.

    ``unary_logits`` (N, L) are scores, higher = more likely (= -unary energy).
    Returns the marginals Q (N, L) float32 (float64 when ``unary_logits`` is float64, for
    gradient checks with an exact pairwise model), or (Q, logits) with ``return_logits``
    where softmax(logits) == Q (log-marginals up to a per-point constant). ``callback(t, Q)``
    is called after every iteration (progress, early inspection); with ``checkpoint`` only
    after every chunk of iterations. ``checkpoint=True`` (when autograd records) keeps only
    every ~sqrt(T)-th iteration's marginals and recomputes the others in the backward pass
    (torch.utils.checkpoint): less memory for ~1.3x the time.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations: expected an int >= 0, got {iterations!r}")
    logits = unary_logits if unary_logits.dtype == torch.float64 else unary_logits.float()
    unary, exp_safe, checked = logits, False, False
    recording = torch.is_grad_enabled()
    if not (recording and logits.requires_grad):
        bound = getattr(pairwise, "message_bound", None)
        if bound is not None and bound < _EXP_SAFE:
            unary, exp_safe = _exp_safe(logits, bound), True
        else:  # no (small) bound: each iteration's logits are checked instead (one aminmax)
            unary, checked = _exp_safe(logits, 0.0), True
    # the exp path needs unaries in exp's range: _exp_safe's, for any bound
    q = (
        _normalize_in_place(torch.exp(unary))
        if exp_safe or checked
        else torch.softmax(logits, dim=1)
    )
    if checkpoint and recording and iterations:
        chunk = max(1, round(math.sqrt(iterations)))
        done = 0
        while done < iterations:
            count = min(chunk, iterations - done)
            q, logits = _checkpoint(_iterate, unary, q, pairwise, count, use_reentrant=False)
            done += count
            if callback is not None:
                callback(done - 1, q)
        return (q, logits) if return_logits else q
    for t in range(iterations):
        recheck()  # contention since the last checkpoint (the build, an iteration): 1 thread
        logits = pairwise.add_message(unary, q)
        del q  # consumed: free it before the next marginals are allocated
        last = return_logits and t == iterations - 1
        plain = not last and not (recording and logits.requires_grad)
        if plain and (exp_safe or (checked and _in_exp_range(logits))):
            q = _normalize_exp_in_place(logits)
        else:
            q = torch.softmax(logits, dim=1)
        if callback is not None:
            callback(t, q)
    return (q, logits) if return_logits else q


def _iterate(unary: torch.Tensor, q: torch.Tensor, pairwise: MessagePassing, count: int):
    """``count`` plain updates (one checkpointed chunk of ``mean_field``)."""
    logits = unary
    for _ in range(count):
        q, logits = mean_field_step(unary, q, pairwise)
    return q, logits


_EXP_SAFE = 60.0  # largest message bound for exponentiating without a per-point maximum
_EXP_RANGE = 80.0  # exp(+-80) is inside float32's normal range (about e^+-87)


def _in_exp_range(logits: torch.Tensor) -> bool:
    """Whether every logit lies in [-80, 80], where exp is a normal float32 (the exp path's
    condition, checked on the logits themselves when no message bound guarantees it)."""
    low, high = (float(v) for v in torch.aminmax(logits))
    return low >= -_EXP_RANGE and high <= _EXP_RANGE


def _normalize_exp_in_place(logits: torch.Tensor) -> torch.Tensor:
    """softmax without its per-point maximum: valid once logits are within exp's range.

    The row sums are a matrix-vector product, faster than ``sum(1)`` over the short label
    rows (L ~ 21)."""
    return _normalize_in_place(logits.exp_())


def _normalize_in_place(q: torch.Tensor) -> torch.Tensor:
    """Rows of ``q`` (N, L) >= 0 divided by their sums, in place.

    For few labels (L <= 8: weak labels, masks, side-by-side runs) G consecutive rows are
    viewed as one row of G*L values and multiplied by G diagonal blocks of ones, which
    gives every value its own row's sum: a same-shape division instead of a broadcast one
    over short rows, 2-4x faster on CPU."""
    n, width = q.shape
    if width > _FEW_LABELS or n == 0 or not q.is_contiguous():
        return q.div_(torch.mm(q, q.new_ones(width, 1)))
    group = next(g for g in range(max(1, _FEW_LABELS // width), 0, -1) if n % g == 0)
    wide = q.view(n // group, group * width)
    blocks = torch.block_diag(*[q.new_ones(width, width)] * group)
    wide.div_(torch.mm(wide, blocks))
    return q


_FEW_LABELS = 8  # up to this many labels, row sums come from a block matrix of ones


def _exp_safe(unary: torch.Tensor, bound: float) -> torch.Tensor:
    """Unary logits whose sum with any message in [-bound, bound] lies within exp's range.

    Log-probabilities and pydensecrf's energies already do (no copy); otherwise the
    unaries are shifted so that each point's largest is 0 (a per-point constant, so the
    marginals are unchanged), which leaves every logit in [-bound - spread, bound] with
    each point's largest at least -bound: no overflow and no all-zero row.
    """
    low, high = (float(v) for v in torch.aminmax(unary))
    if low - bound >= -_EXP_RANGE and high + bound <= _EXP_RANGE:
        return unary
    return unary - unary.amax(1, keepdim=True)
