"""Tiled dense-CRF refinement: bounded memory for images and volumes of any size.

The CRF's memory grows linearly with the number of pixels (``estimate_bytes``). Above a
budget, ``refine`` cuts the input into overlapping tiles (blocks along every spatial axis),
refines each tile on its own and keeps each tile's core. Every kernel is a Gaussian in
position, so a pixel only feels pixels within a few bandwidths: the overlap is
``OVERLAP_SIGMAS`` times the largest spatial bandwidth of an active kernel (in pixels along
each axis, i.e. ``sxy / spacing``), and a core pixel sees the same neighbourhood as in the
untiled CRF up to kernel weights below exp(-OVERLAP_SIGMAS^2 / 2) (1.1% at 3 bandwidths).
Measured on real photos (``benchmarks/bench_tiling.py --agreement``, default
``CRFParams``), tiled labels agree with the untiled ones on 99.96% of pixels (a VOC photo
upscaled to 3 megapixels, 512-pixel tiles) and (on 99.6-99.9% with 256-pixel tiles at 0.6
megapixels and pydensecrf's parameters); ``tests/test_tiling.py`` checks >= 99% on small
inputs with small tiles.

``iter_tiles`` yields one tile's refined core at a time so that callers (the CLI) can
stream results to disk without ever holding the full marginals.

The budget is ``DEFAULT_BUDGET`` bytes (set ``DEEPCRF_MEMORY_BUDGET``, e.g. ``2G``, to
change it); ``refine(..., tile=False)`` never tiles, ``tile=True`` always does, and
``tile=<int>`` sets the core size in pixels per axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np
import torch

from deepcrf.allocator import release_memory
from deepcrf.inputs import DEFAULT_BUDGET, memory_budget

__all__ = [
    "DEFAULT_BUDGET",
    "OVERLAP_SIGMAS",
    "core_size",
    "estimate_bytes",
    "iter_tiles",
    "memory_budget",
    "overlap_pixels",
    "refine_tiled",
    "tile_boxes",
]

OVERLAP_SIGMAS = 3.0

Box = tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]


def estimate_bytes(num_points: int, num_labels: int, feature_dims: Sequence[int]) -> int:
    """Peak working memory of one untiled refinement of ``num_points`` pixels (all images of
    a batch together), fitted on CPU to peak RSS growth on photos at 1 megapixel
    (``benchmarks/bench_tiling.py``; it over-estimates by 0-20%).

    The peak is either the lattice build (about 60 bytes per pixel and lattice axis, a
    kernel on d features having d + 1 axes) or the mean-field loop (about 6 float32 copies
    of the (N, L) label buffers plus the lattices kept for the iterations).
    """
    axes = sum(d + 1 for d in feature_dims)
    per_point = max(60 * axes, 24 * num_labels + 30 * axes) + 64
    return int(num_points * per_point)


def overlap_pixels(
    ndim: int,
    bandwidths: Sequence[float | Sequence[float]],
    spacing: float | Sequence[float] = 1.0,
) -> list[int]:
    """Overlap per axis: ``OVERLAP_SIGMAS`` times the largest spatial bandwidth (in pixels)."""
    spacings = [float(spacing)] * ndim if np.ndim(spacing) == 0 else [float(s) for s in spacing]
    reach = [0.0] * ndim
    for bw in bandwidths:
        per_axis = [float(bw)] * ndim if np.ndim(bw) == 0 else [float(b) for b in bw]
        for k in range(ndim):
            reach[k] = max(reach[k], per_axis[k] / spacings[k])
    return [math.ceil(OVERLAP_SIGMAS * r) for r in reach]


def core_size(
    spatial: Sequence[int], overlap: Sequence[int], bytes_per_point: float, budget: int
) -> list[int]:
    """Core size per axis such that a tile with its overlaps fits ``budget`` bytes.

    Cores are at least 32 pixels (or the whole axis); with bandwidths that are large
    compared to the budget the tiles are mostly overlap (slow, but still bounded)."""
    points = max(budget / max(bytes_per_point, 1.0), 1.0)
    ndim = len(spatial)
    core = [int(s) for s in spatial]
    # shrink the largest padded side first until the tile fits
    while math.prod(min(c + 2 * o, s) for c, o, s in zip(core, overlap, spatial)) > points:
        padded = [min(c + 2 * o, s) for c, o, s in zip(core, overlap, spatial)]
        k = max(range(ndim), key=lambda i: (padded[i], core[i]))
        if core[k] <= 32:
            candidates = [i for i in range(ndim) if core[i] > 32]
            if not candidates:
                break
            k = max(candidates, key=lambda i: core[i])
        core[k] = max(32, int(core[k] * 0.8))
    return core


def tile_boxes(spatial: Sequence[int], core: Sequence[int], overlap: Sequence[int]) -> list[Box]:
    """(core box in the input, padded box in the input, core box inside the padded tile)."""
    axes = []
    for size, c, o in zip(spatial, core, overlap):
        entries = []
        for start in range(0, size, c):
            stop = min(start + c, size)
            lo, hi = max(0, start - o), min(size, stop + o)
            entries.append((slice(start, stop), slice(lo, hi), slice(start - lo, stop - lo)))
        axes.append(entries)
    return [
        tuple(tuple(e[i] for e in combo) for i in range(3))  # type: ignore[misc]
        for combo in product(*axes)
    ]


def _image_slice(image: Any, box: tuple[slice, ...], channels_last: bool) -> Any:
    if image is None:
        return None
    return image[box] if channels_last else image[(Ellipsis, *box)]


def iter_tiles(
    refine_fn: Callable[..., Any],
    probs: Any,
    image: Any,
    options: dict[str, Any],
    core: Sequence[int],
    overlap: Sequence[int],
) -> Iterator[tuple[tuple[slice, ...], Any]]:
    """Refine tile by tile; yields (core box in the input's spatial axes, refined core).

    ``probs`` is (..., L, *spatial) numpy or torch; ``image`` numpy (*spatial[, C]) or torch
    (..., C, *spatial); ``options`` are ``refine`` keyword arguments (``extra_kernels``
    features are cut the same way). Tiles are converted to float32 one at a time, so a
    memory-mapped ``probs`` is read piece by piece.
    """
    ndim = len(core)
    spatial = tuple(probs.shape[-ndim:])
    channels_last = isinstance(image, np.ndarray)
    extra = list(options.get("extra_kernels", ()))
    for core_box, padded, inner in tile_boxes(spatial, core, overlap):
        tile_probs = probs[(Ellipsis, *padded)]
        if isinstance(tile_probs, np.ndarray):  # a writable copy (memory maps too), float32+
            floating = tile_probs.dtype.kind == "f"
            dtype = np.promote_types(tile_probs.dtype, np.float32) if floating else None
            tile_probs = np.array(tile_probs, dtype=dtype)
        tile_opts = dict(options)
        if extra:
            tile_opts["extra_kernels"] = [(f[padded], c) for f, c in extra]
        out = refine_fn(
            tile_probs, _image_slice(image, padded, channels_last), tile=False, **tile_opts
        )
        yield core_box, out[(Ellipsis, *inner)]


def refine_tiled(
    refine_fn: Callable[..., Any],
    probs: Any,
    image: Any,
    options: dict[str, Any],
    core: Sequence[int],
    overlap: Sequence[int],
    out_shape: Sequence[int] | None = None,
) -> Any:
    """The tiles of ``iter_tiles`` assembled into one float32 array of ``out_shape``
    (default: ``probs``' shape; label maps give (..., L, *spatial))."""
    shape = tuple(probs.shape if out_shape is None else out_shape)
    if isinstance(probs, np.ndarray):
        out: Any = np.empty(shape, dtype=np.float32)
    else:
        out = torch.empty(shape, dtype=torch.float32, device=probs.device)
    for box, values in iter_tiles(refine_fn, probs, image, options, core, overlap):
        out[(Ellipsis, *box)] = values
    release_memory()  # the last tile's buffers: do not keep them resident
    return out


def plan(
    spatial: Sequence[int],
    num_labels: int,
    options: dict[str, Any],
    tile: bool | int | None,
    batch: int = 1,
) -> tuple[list[int], list[int]] | None:
    """(core, overlap) when ``refine`` should tile, else None (see the module docstring)."""
    if tile is False:
        return None
    if tile is not None and (
        isinstance(tile, np.bool_) or not isinstance(tile, (bool, int, np.integer))
    ):
        raise TypeError(f"tile: expected None, True, False or a core size in pixels, got {tile!r}")
    if not isinstance(tile, bool) and tile is not None and int(tile) < 1:
        raise ValueError(f"tile: expected a positive core size in pixels, got {tile}")
    spatial = tuple(int(s) for s in spatial)
    ndim = len(spatial)
    bandwidths = []
    dims = []
    if _active(options.get("gaussian_compat", 1.0)):
        bandwidths.append(options.get("gaussian_sxy", 3.0))
        dims.append(ndim)
    if _active(options.get("bilateral_compat", 1.0)):
        bandwidths.append(options.get("bilateral_sxy", 80.0))
        dims.append(ndim + 3)
    extra = list(options.get("extra_kernels", ()))
    dims += [int(np.shape(f)[-1]) for f, _ in extra]
    per_point = estimate_bytes(1, num_labels, dims)
    n = math.prod(spatial)
    budget = memory_budget()
    if tile is None and n * batch * per_point <= budget:
        return None
    if extra:
        # user features are already divided by unknown bandwidths: no safe overlap
        if tile is None:
            return None
        raise ValueError("tile: tiling is not supported with extra_kernels")
    overlap = overlap_pixels(ndim, bandwidths, options.get("spacing", 1.0)) if bandwidths else []
    overlap = overlap or [0] * ndim
    if tile is None or tile is True:
        core = core_size(spatial, overlap, per_point * batch, budget)
    else:
        core = [min(int(tile), s) for s in spatial]
    if all(c >= s for c, s in zip(core, spatial)):
        return None
    return core, overlap


def _active(compat: Any) -> bool:
    return not (np.ndim(compat) == 0 and float(compat) == 0.0)
