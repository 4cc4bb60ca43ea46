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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from deepcrf.exact import exact_filter
from deepcrf.lattice import Lattice, build_lattice, stack_lattices
from deepcrf.threads import adaptive

__all__ = [
    "NORMALIZATIONS",
    "Kernel",
    "MessagePassing",
    "Pairwise",
    "compat_matrix",
    "mean_field",
    "mean_field_step",
    "normalization_scales",
]

NORMALIZATIONS = ("symmetric", "before", "after", "none")
FILTERS = ("lattice", "exact")


@dataclass
class Kernel:
    """One Gaussian pairwise term.

    Attributes:
        features: (N, d) per-point features divided by their bandwidths.
        compat: Potts weight (number), diagonal (L,) or full (L, L) compatibility.
        normalization: one of ``NORMALIZATIONS``.
        lattice: an already built lattice for ``features`` (reused instead of rebuilding).
    """

    features: torch.Tensor
    compat: float | torch.Tensor = 1.0
    normalization: str = "symmetric"
    lattice: Lattice | None = None


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


def _compat_norm(compat: float | torch.Tensor, num_labels: int) -> float:
    """max_l sum_l' |mu(l, l')|: how much a compatibility can amplify a message."""
    return float(compat_matrix(compat, num_labels).abs().sum(1).max())


def _potts_weight(compat: float | torch.Tensor) -> float | None:
    if isinstance(compat, (int, float)):
        return float(compat)
    if isinstance(compat, torch.Tensor) and compat.dim() == 0:
        return float(compat)
    return None


class Pairwise:
    """All pairwise kernels of a dense CRF on fixed features: built once, applied per iteration.

    With ``filter="lattice"`` every kernel gets one permutohedral lattice; their
    normalisations and Potts weights are folded into the splat/slice weights and
    all kernels are stacked into one block lattice, so an iteration costs one splat, one
    blur and one slice whatever the number of kernels. ``filter="exact"`` uses brute force.
    """

    def __init__(
        self,
        kernels: Sequence[Kernel],
        num_labels: int,
        segments: Sequence[int] | None = None,
        filter: str = "lattice",
    ) -> None:
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        if num_labels < 1:
            raise ValueError(f"num_labels: expected >= 1, got {num_labels}")
        self.kernels = list(kernels)
        self.num_labels = num_labels
        self.filter = filter
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
        self.segments = tuple(segments) if segments is not None else None
        self._scales: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        self._lattices: list[Lattice] = []
        bound = None if n is None else torch.zeros(n)
        for kernel in self.kernels:
            if filter == "lattice":
                lattice = kernel.lattice or build_lattice(kernel.features, self.segments)
                self._lattices.append(lattice)
                norm = lattice.row_sums
            else:
                ones = kernel.features.new_ones(kernel.features.shape[0], 1)
                norm = exact_filter(kernel.features.float(), ones, self.segments)[:, 0]
                lattice = None
            scales = normalization_scales(norm, kernel.normalization)
            self._scales.append(scales)
            bound += (
                _compat_norm(kernel.compat, num_labels)
                * self._row_sums(kernel, lattice, norm, scales).cpu()
            )
        # every message entry lies in [-message_bound, message_bound] for marginals in [0, 1]
        self.message_bound = float(bound.max()) if bound is not None and n else 0.0
        self._fused = self._fuse() if filter == "lattice" and self.kernels else None
        self._lattices.clear()  # the fused copy is all that is used from now on

    def _row_sums(self, kernel: Kernel, lattice: Lattice | None, norm, scales) -> torch.Tensor:
        """Row sums of diag(after) K diag(before): the kernel's output on all-ones values."""
        before, after = scales
        if before is None:
            sums = norm
        elif lattice is not None:
            sums = lattice.filter(before[:, None])[:, 0]
        else:
            sums = exact_filter(kernel.features.float(), before[:, None].float(), self.segments)
            sums = sums[:, 0]
        return sums if after is None else after * sums

    def _fuse(self) -> tuple[Lattice, list[torch.Tensor | None]]:
        """Stack the scaled lattices; return it with each block's label transform (or None)."""
        scaled, transforms = [], []
        for kernel, lattice, (before, after) in zip(self.kernels, self._lattices, self._scales):
            weight = _potts_weight(kernel.compat)
            if weight is not None:  # Potts: -mu = w·I, folded into the slice
                if after is None:
                    after = torch.ones(lattice.num_points, device=lattice.device)
                after = after * weight
                transforms.append(None)
            else:
                mu = compat_matrix(kernel.compat, self.num_labels)
                transforms.append(-mu.t().float().to(lattice.device))
            scaled.append(lattice.scale(before, after))
        return stack_lattices(scaled), transforms

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """The pairwise logits -sum_k filter_k(q) @ mu_k^T for marginals ``q`` (N, L)."""
        return self.add_message(torch.zeros_like(q, dtype=torch.float32), q)

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` + the pairwise message of ``q``, as a new (N, L) float32 tensor."""
        if self._fused is not None:
            fused, transforms = self._fused
            values = fused.splat_blur(q, transforms=transforms)
            return fused.slice_values(values, add=logits)
        out = logits.float().clone()
        for kernel, (before, after) in zip(self.kernels, self._scales):
            x = q if before is None else q * before[:, None]
            filtered = exact_filter(kernel.features.float(), x.float(), self.segments)
            if after is not None:
                filtered = filtered * after[:, None]
            mu = compat_matrix(kernel.compat, self.num_labels).to(filtered)
            out -= filtered @ mu.t()
        return out


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
    return None, None


class MessagePassing(Protocol):
    """What the mean-field loop needs from a pairwise model: ``Pairwise`` for fixed
    parameters, ``deepcrf.nn`` for learnable ones."""

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
):
    """Run ``iterations`` mean-field updates from softmax(unary_logits).

    ``unary_logits`` (N, L) are scores, higher = more likely (= -unary energy).
    Returns the marginals Q (N, L) float32 (float64 when ``unary_logits`` is float64, for
    gradient checks with an exact pairwise model), or (Q, logits) with ``return_logits``
    where softmax(logits) == Q (log-marginals up to a per-point constant). ``callback(t, Q)``
    is called after every iteration (progress, early inspection).
    """
    if iterations < 0:
        raise ValueError(f"iterations: expected >= 0, got {iterations}")
    logits = unary_logits if unary_logits.dtype == torch.float64 else unary_logits.float()
    q = torch.softmax(logits, dim=1)
    unary, normalize = logits, _softmax
    bound = getattr(pairwise, "message_bound", None)
    if bound is not None and bound < _EXP_SAFE and not logits.requires_grad:
        unary, normalize = _exp_safe(logits, bound), _normalize_exp_in_place
    for t in range(iterations):
        logits = pairwise.add_message(unary, q)
        del q  # consumed: free it before the next marginals are allocated
        keep_logits = return_logits and t == iterations - 1
        q = torch.softmax(logits, dim=1) if keep_logits else normalize(logits)
        if callback is not None:
            callback(t, q)
    return (q, logits) if return_logits else q


_EXP_SAFE = 60.0  # largest message bound for exponentiating without a per-point maximum
_EXP_RANGE = 80.0  # exp(+-80) is inside float32's normal range (about e^+-87)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)


def _normalize_exp_in_place(logits: torch.Tensor) -> torch.Tensor:
    """softmax without its per-point maximum: valid once logits are within exp's range."""
    q = logits.exp_()
    return q.div_(q.sum(1, keepdim=True))


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
