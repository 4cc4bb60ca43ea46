"""Checks of what users hand to ``refine`` / ``refine_labels``: clear errors naming the
argument, or a warning (an error with ``strict=True``) where an input is legal but most
likely a mistake. Nothing here modifies the caller's arrays.

The rules, stated once:

* ``probs``: a floating-point numpy array or torch tensor, no zero-size axis, finite, and
  within float32's range (larger values would overflow inside the CRF: an error, not a
  silent all-NaN result). Tensors that require grad are detached: ``refine`` is inference,
  ``deepcrf.nn.DenseCRF`` is the differentiable layer.
* ``image``: the raw pixels (uint8 0..255 for photos). A float image within 0..1, an image
  with negative values (a normalised network input), a bool image or an integer image
  beyond 0..255 (16-bit) is most likely in the wrong units for ``bilateral_srgb``: a
  ``UserWarning`` (``ValueError`` with ``strict=True``). NaN/inf is always an error.
* batches: torch probs (B, L, H, W) are a batch and (L, H, W) one image; numpy probs
  (L, *spatial) are one image or volume. ``batched=True`` makes numpy probs (B, L, *spatial)
  with images (B, *spatial, C) a batch refined image by image. numpy probs with three
  spatial axes and an RGB image (A, H, W, 3) could be either, so they need ``batched``.
* ``iterations`` is an integer >= 0; ``*_compat`` are finite numbers (numpy/torch scalars
  included), vectors or matrices; bandwidths are finite and positive.
* ``filter="exact"`` costs N^2 memory and time per image: refused above
  ``EXACT_MAX_POINTS`` points per image unless ``force=True``.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_BUDGET",
    "EXACT_MAX_POINTS",
    "FLOAT32_MAX",
    "check_bandwidth",
    "check_compat",
    "check_image",
    "check_integer",
    "check_label_count",
    "check_labels",
    "check_probs",
    "memory_budget",
    "needs_batch_loop",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Points per image above which ``filter="exact"`` needs ``force=True`` (its N x N kernel
#: matrix is streamed in bounded chunks, but the time is O(N^2): 65536 points ~ minutes).
EXACT_MAX_POINTS = 1 << 16
#: Default memory budget of one untiled refinement (``memory_budget``).
DEFAULT_BUDGET = 7 << 29  # 3.5 GiB
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _warn_or_raise(message: str, strict: bool) -> None:
    if strict:
        raise ValueError(message + " (strict=True)")
    warnings.warn(message + " (pass strict=True to make this an error)", UserWarning, stacklevel=5)


def check_integer(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; bools, floats (2.5 or 2.0) and strings are errors."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            value = int(value)
        else:
            raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {int(value)}")
    return int(value)


def check_compat(compat: Any, name: str) -> Any:
    """A finite Potts weight as a Python float (numpy/torch scalars too) or a finite
    vector/matrix tensor, detached."""
    if isinstance(compat, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a number, vector or matrix, got {compat!r}")
    if isinstance(compat, numbers.Real):
        value = float(compat)
        if not np.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value}")
        return value
    if isinstance(compat, torch.Tensor):
        tensor = compat.detach()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(compat, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected a number, vector or matrix, got {compat!r}") from exc
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name}: expected real numbers, got {tensor.dtype}")
    if tensor.dim() == 0:
        return check_compat(float(tensor), name)
    if tensor.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return tensor


def check_bandwidth(value: Any, name: str) -> Any:
    """Bandwidths: one or several finite positive numbers (returned unchanged)."""
    values = value.detach().reshape(-1).tolist() if isinstance(value, torch.Tensor) else value
    values = np.asarray(values, dtype=object).reshape(-1)
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}: expected positive numbers, got {value!r}")
        if not (np.isfinite(float(v)) and float(v) > 0):
            raise ValueError(f"{name}: expected finite positive numbers, got {value!r}")
    if values.size == 0:
        raise ValueError(f"{name}: expected a number or one number per axis, got {value!r}")
    return value


def _as_checked_array(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """``x`` detached (torch) or in native byte order (numpy; torch cannot read others)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _finite_range(x: np.ndarray | torch.Tensor) -> tuple[float, float, bool]:
    """(min, max, all finite) without copying large arrays more than once."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point():
            low, high = torch.aminmax(x)
            finite = bool(torch.isfinite(low) & torch.isfinite(high))
        else:
            wide = x.dtype in (torch.bool, torch.uint16, torch.uint32, torch.uint64)
            low, high = torch.aminmax(x.to(torch.int64) if wide else x)  # no aminmax for these
            finite = True
        return float(low), float(high), finite
    low, high = x.min(), x.max()
    finite = bool(np.isfinite(low) and np.isfinite(high)) if x.dtype.kind == "f" else True
    return float(low), float(high), finite


def check_probs(probs: Any) -> np.ndarray | torch.Tensor:
    """``probs`` detached, checked for type, zero-size axes, NaN/inf and float32 range."""
    probs = _as_checked_array(probs, "probs")
    dtype = probs.dtype
    floating = probs.is_floating_point() if isinstance(probs, torch.Tensor) else dtype.kind == "f"
    if not floating:
        raise TypeError(f"probs: expected a floating-point array, got {dtype}")
    if probs.ndim < 2:
        raise ValueError(f"probs: expected (L, *spatial), got shape {tuple(probs.shape)}")
    if 0 in tuple(probs.shape):
        raise ValueError(f"probs: has a zero-size axis (shape {tuple(probs.shape)})")
    low, high, finite = _finite_range(probs)
    if not finite:
        raise ValueError("probs: contains NaN or infinite values")
    if max(abs(low), abs(high)) > FLOAT32_MAX:
        raise ValueError(
            f"probs: values up to {max(abs(low), abs(high)):.3g} exceed float32's range "
            f"({FLOAT32_MAX:.3g}) that the CRF computes in; rescale them"
        )
    return probs


def check_image(image: Any, strict: bool = False) -> np.ndarray | torch.Tensor | None:
    """``image`` detached; NaN/inf, zero size and complex are errors, unlikely pixel units
    (0..1 floats, negative values, bool, integers beyond 0..255) a warning or, with
    ``strict``, an error."""
    if image is None:
        return None
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        try:
            image = np.asarray(image)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"image: expected an array, got {type(image).__name__}") from exc
        if image.dtype == object:
            raise TypeError("image: expected a numeric array, got objects")
    image = _as_checked_array(image, "image")
    if isinstance(image, torch.Tensor):
        if image.is_complex():
            raise TypeError(f"image: expected real pixel values, got {image.dtype}")
        kind = "b" if image.dtype == torch.bool else ("f" if image.is_floating_point() else "i")
        unsigned8 = image.dtype == torch.uint8
    else:
        if image.dtype.kind not in "biuf":
            raise TypeError(f"image: expected real pixel values, got {image.dtype}")
        kind = image.dtype.kind
        unsigned8 = image.dtype == np.uint8
    if 0 in tuple(image.shape):
        raise ValueError(f"image: has a zero-size axis (shape {tuple(image.shape)})")
    if unsigned8:
        return image
    low, high, finite = _finite_range(image)
    if not finite:
        raise ValueError("image: contains NaN or infinite values")
    if kind == "f" and max(abs(low), abs(high)) > FLOAT32_MAX:
        raise ValueError(f"image: values up to {max(abs(low), abs(high)):.3g} exceed float32")
    units = "bilateral_srgb is in the image's units (0..255 for photos)"
    if kind == "b":
        _warn_or_raise(f"image: a bool image (0/1 values); {units}", strict)
    elif low < 0:
        _warn_or_raise(
            f"image: has negative values (min {low:.3g}); pass the raw pixels, not the "
            f"normalised network input; {units}",
            strict,
        )
    elif kind == "f" and high <= 1.0:
        _warn_or_raise(
            f"image: float values within 0..1 (max {high:.3g}); scale to 0..255 "
            f"(image * 255) or set bilateral_srgb accordingly; {units}",
            strict,
        )
    elif kind != "f" and high > 255:
        _warn_or_raise(
            f"image: integer values up to {high:.0f} (16-bit?); scale to 0..255 or set "
            f"bilateral_srgb accordingly; {units}",
            strict,
        )
    return image


def memory_budget() -> int:
    """Bytes one untiled refinement may use: ``DEEPCRF_MEMORY_BUDGET`` (e.g. ``2G``,
    ``512M``) or ``DEFAULT_BUDGET``; ``deepcrf.tiling`` tiles inputs beyond it."""
    raw = os.environ.get("DEEPCRF_MEMORY_BUDGET", "").strip().upper().rstrip("B")
    if not raw:
        return DEFAULT_BUDGET
    unit = raw[-1] if raw[-1] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)]) * _UNITS[unit]
    except ValueError as exc:
        raise ValueError(
            f"DEEPCRF_MEMORY_BUDGET: expected a size like 2G or 512M, got {raw!r}"
        ) from exc
    if not value > 0:
        raise ValueError(f"DEEPCRF_MEMORY_BUDGET: expected a positive size, got {raw!r}")
    return int(value)


def check_label_count(num_labels: int, name: str) -> int:
    """``num_labels`` whose L x L compatibility matrices fit the memory budget."""
    if 8 * num_labels * num_labels > memory_budget():
        raise ValueError(
            f"{name}: {num_labels} labels need L x L compatibility matrices of "
            f"{4 * num_labels**2 / 2**30:.1f} GiB each, beyond the memory budget "
            "(DEEPCRF_MEMORY_BUDGET)"
        )
    return num_labels


def check_labels(labels: Any, name: str = "labels") -> np.ndarray | torch.Tensor:
    """Integer class indices: integer/bool arrays as they are, float arrays only if every
    value is a whole number (never truncated), detached; zero size is an error."""
    labels = _as_checked_array(labels, name)
    if 0 in tuple(labels.shape):
        raise ValueError(f"{name}: has a zero-size axis (shape {tuple(labels.shape)})")
    if isinstance(labels, torch.Tensor):
        floating, complex_ = labels.is_floating_point(), labels.is_complex()
    else:
        floating, complex_ = labels.dtype.kind == "f", labels.dtype.kind not in "biuf"
    if complex_:
        raise TypeError(f"{name}: expected integer class indices, got {labels.dtype}")
    if floating:
        whole = (
            bool(torch.all(labels == torch.round(labels)))
            if isinstance(labels, torch.Tensor)
            else bool(np.all(labels == np.round(labels)))
        )
        if not whole:
            raise ValueError(
                f"{name}: expected integer class indices, got non-integer values ({labels.dtype});"
                " round or cast them explicitly"
            )
        labels = labels.long() if isinstance(labels, torch.Tensor) else labels.astype(np.int64)
    return labels


def needs_batch_loop(probs: Any, image: Any, batched: bool | None, spatial_axis: int = 1) -> bool:
    """Whether numpy ``probs`` must be refined item by item (see the module's batch rule).

    ``spatial_axis`` is where spatial axes start in ``probs`` when unbatched (1 for probs
    (L, *spatial), 0 for label maps (*spatial)). Raises for the ambiguous case.
    """
    if batched is not None and not isinstance(batched, (bool, np.bool_)):
        raise TypeError(f"batched: expected True, False or None, got {batched!r}")
    if not isinstance(probs, np.ndarray):
        return False
    if batched is None:
        spatial = probs.ndim - spatial_axis
        rgb = image is not None and np.ndim(image) == probs.ndim - spatial_axis + 1
        if spatial == 3 and rgb and np.shape(image)[-1] == 3:
            raise ValueError(
                f"batched: numpy input of shape {probs.shape} with an RGB image "
                f"{np.shape(image)} is ambiguous (a batch of {np.shape(image)[0]} photos or "
                "one volume); pass batched=True (refine each image) or batched=False (volume)"
            )
        return False
    return bool(batched)


def batch_items(x: Any, count: int, name: str) -> Sequence[Any]:
    """The ``count`` items of a batched numpy argument (or None repeated)."""
    if x is None:
        return [None] * count
    arr = np.asarray(x) if not isinstance(x, torch.Tensor) else x
    if arr.shape[0] != count:
        raise ValueError(
            f"{name}: with batched=True expected {count} items on axis 0, got shape {arr.shape}"
        )
    return list(arr)
