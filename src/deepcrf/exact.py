"""Exact (brute-force) Gaussian filtering: the reference the lattice is tested against.

out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j over all points j of the same point set,
including j = i. Cost is O(N^2) per set, so it is meant for small inputs (tests, tiny
images, gradient checks); memory is bounded by processing rows in chunks.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["exact_filter"]


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
        for row in range(start, stop, chunk):
            fi = features[row : min(row + chunk, stop)]
            sq = (fi.unsqueeze(1) - f.unsqueeze(0)).pow(2).sum(-1)
            pieces.append(torch.exp(-0.5 * sq) @ v)
    return torch.cat(pieces) if pieces else values.new_zeros(values.shape)
