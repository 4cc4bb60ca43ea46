"""Exact (brute-force) Gaussian filtering: the reference the lattice is tested against.

out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j over all points j of the same point set,
including j = i. Cost is O(N^2) per set, so it is meant for small inputs (tests, tiny
images, gradient checks); memory is bounded by processing rows in chunks of at most
``chunk`` rows and ``CHUNK_BYTES`` of temporaries (``refine`` refuses ``filter="exact"``
above ``deepcrf.inputs.EXACT_MAX_POINTS`` points per image unless ``force=True``). The
squared distances of a chunk are one matrix product, |f_i|^2 + |f_j|^2 - 2 f_i.f_j, on
features centred per point set (rounding relative to the set's spread, ~1e-6 in float32).
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["CHUNK_BYTES", "exact_filter"]

#: Bound on the temporary memory of one chunk of rows (their kernel rows to all points).
CHUNK_BYTES = 64 << 20

#: Kernel values below exp(-cutoff) are set to 0: far below rounding next to the self-pair's
#: 1, and it keeps exp and the product out of subnormal numbers, which cost 50x on x86.
_CUTOFF = {torch.float16: 8.0, torch.bfloat16: 60.0, torch.float32: 60.0, torch.float64: 300.0}


def exact_filter(
    features: torch.Tensor,
    values: torch.Tensor,
    segments: list[int] | tuple[int, ...] | None = None,
    chunk: int = 2048,
) -> torch.Tensor:
    """Filter ``values`` (N, C) with the Gaussian kernel on ``features`` (N, d).

    Differentiable with respect to both arguments (plain autograd), computed in the
    dtype of ``values`` (use float64 for gradient checks). ``segments`` splits the points
    into independent sets (start offsets, length B+1), as for ``build_lattice``.
    """
    if features.dim() != 2 or values.dim() != 2 or features.shape[0] != values.shape[0]:
        raise ValueError(
            f"features/values: expected (N, d) and (N, C), got {tuple(features.shape)} "
            f"and {tuple(values.shape)}"
        )
    n = features.shape[0]
    bounds = list(segments) if segments is not None else [0, n]
    features = features.to(values.dtype)
    in_place = not (torch.is_grad_enabled() and features.requires_grad)
    cutoff = _CUTOFF.get(values.dtype, 60.0)
    pieces = []
    for start, stop in itertools.pairwise(bounds):
        # centred per set: |f_i - f_j|^2 = |f_i|^2 + |f_j|^2 - 2 f_i.f_j then loses only
        # rounding relative to the set's own spread, not to the features' offset
        f = features[start:stop]
        f = f - f.detach().mean(0, keepdim=True)
        v = values[start:stop]
        norms = f.pow(2).sum(1)
        # rows per chunk: at most ``chunk``, and the (rows, n) kernel block and its mask of
        # far pairs within CHUNK_BYTES
        per_row = (2 * features.element_size() + 1) * (stop - start)
        rows = max(1, min(chunk, CHUNK_BYTES // max(per_row, 1)))
        for row in range(0, stop - start, rows):
            fi = f[row : row + rows]
            sq = torch.addmm(norms[row : row + rows, None] + norms, fi, f.t(), alpha=-2.0)
            far = sq > 2.0 * cutoff
            if in_place:
                kernel = torch.exp(sq.clamp_(0.0, 2.0 * cutoff).mul_(-0.5), out=sq)
                kernel.masked_fill_(far, 0.0)
            else:  # the features' gradient goes through the clamp
                kernel = torch.exp(-0.5 * sq.clamp(0.0, 2.0 * cutoff)).masked_fill(far, 0.0)
            pieces.append(kernel @ v)
    return torch.cat(pieces) if pieces else values.new_zeros(values.shape)
