"""Exact (brute-force) Gaussian filtering: the reference the lattice is tested against.

out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j over all points j of the same point set,
including j = i. Cost is O(N^2) per set, so it is meant for small inputs (tests, tiny
images, gradient checks); memory is bounded by processing rows in chunks of at most
``chunk`` rows and ``CHUNK_BYTES`` of temporaries (``refine`` refuses ``filter="exact"``
above ``deepcrf.inputs.EXACT_MAX_POINTS`` points per image unless ``force=True``).
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["CHUNK_BYTES", "exact_filter"]

#: Bound on the temporary memory of one chunk of rows (their differences to all points).
CHUNK_BYTES = 64 << 20


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
    pieces = []
    for start, stop in itertools.pairwise(bounds):
        f, v = features[start:stop], values[start:stop]
        # rows per chunk: at most ``chunk``, and the (rows, n, d) difference tensor within
        # CHUNK_BYTES (a 2048-row chunk of a VOC image would otherwise take 8 GB)
        per_row = (stop - start) * (features.shape[1] + 2) * features.element_size()
        rows = max(1, min(chunk, CHUNK_BYTES // max(per_row, 1)))
        for row in range(start, stop, rows):
            fi = features[row : min(row + rows, stop)]
            sq = (fi.unsqueeze(1) - f.unsqueeze(0)).pow(2).sum(-1)
            pieces.append(torch.exp(-0.5 * sq) @ v)
    return torch.cat(pieces) if pieces else values.new_zeros(values.shape)
