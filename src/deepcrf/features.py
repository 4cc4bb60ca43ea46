"""Per-pixel feature vectors for the dense CRF kernels, and a cache of grid lattices.

The spatial ("appearance-free") kernel of a dense CRF only depends on the image size
and its bandwidth, so its lattice is built once and reused for every image of that size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from deepcrf.cache import ByteCache
from deepcrf.lattice import Lattice, build_lattice

__all__ = ["bilateral_features", "grid_features", "grid_lattice", "per_axis"]

_GRID_CACHE: ByteCache[Lattice] = ByteCache("grid lattices")  # bounded by bytes, thread-safe


def per_axis(value: float | Sequence[float], count: int, name: str) -> list[float]:
    """A bandwidth (or spacing) given as one number or ``count`` numbers, as ``count``
    positive finite floats; the error names ``name``. The one parser of bandwidths."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int, float)):
        values = [float(value)] * count
    else:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: expected a number or {count} numbers, got {value!r}"
            ) from None
    if len(values) != count:
        raise ValueError(
            f"{name}: expected a number or {count} numbers (one per axis/channel), "
            f"got {len(values)}"
        )
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"{name}: expected positive finite values, got {values}")
    return values


def grid_features(
    shape: Sequence[int],
    sxy: float | Sequence[float],
    spacing: float | Sequence[float] = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pixel positions divided by the bandwidths: (prod(shape), len(shape)), ``dtype``
    (float32 by default; float64 for brute-force references).

    Position k of a pixel is its index along axis k times ``spacing[k]`` (voxel size, for
    anisotropic volumes) over ``sxy[k]``; ``sxy`` and ``spacing`` are in axis order (rows
    first). For 2-D images the output columns are (x, y), i.e. columns first, the order of
    pydensecrf's DenseCRF2D (the lattice is not invariant to permuting features).
    """
    ndim = len(shape)
    scales = per_axis(sxy, ndim, "sxy")
    spacings = per_axis(spacing, ndim, "spacing")
    axes = [torch.arange(n, dtype=dtype, device=device) for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    columns = [  # plain index / sxy without spacing: bit-identical to pydensecrf's features
        (grids[k] * spacings[k] / scales[k]) if spacings[k] != 1.0 else grids[k] / scales[k]
        for k in range(ndim)
    ]
    if ndim == 2:
        columns = columns[::-1]
    return torch.stack([c.reshape(-1) for c in columns], dim=1)


def bilateral_features(
    image: torch.Tensor,
    sxy: float | Sequence[float],
    srgb: float | Sequence[float],
    spacing: float | Sequence[float] = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Positions over ``sxy`` then channel values over ``srgb``: (prod(spatial), ndim + C)
    in ``dtype`` (float32 by default).

    ``image`` is channels-last (*spatial, C) with raw values (0..255 for photos).
    """
    spatial, channels = tuple(image.shape[:-1]), image.shape[-1]
    scales = per_axis(srgb, channels, "srgb")
    positions = grid_features(spatial, sxy, spacing, device=image.device, dtype=dtype)
    colours = image.reshape(-1, channels).to(dtype) / torch.tensor(
        scales, dtype=dtype, device=image.device
    )
    return torch.cat([positions, colours], dim=1)


def grid_lattice(
    shape: Sequence[int],
    sxy: float | Sequence[float],
    spacing: float | Sequence[float] = 1.0,
    device: torch.device | str | None = None,
    copies: int = 1,
) -> Lattice:
    """The lattice of ``grid_features`` for ``copies`` images of ``shape``, from a small cache."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (tuple(shape), str(sxy), str(spacing), str(device), copies)

    def build() -> Lattice:
        features = grid_features(shape, sxy, spacing, device)
        n = features.shape[0]
        return build_lattice(features.repeat(copies, 1), [i * n for i in range(copies + 1)])

    lattice = _GRID_CACHE.get_or_create(key, build)
    return lattice
