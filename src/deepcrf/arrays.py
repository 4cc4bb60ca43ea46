"""numpy -> torch conversion that accepts what users hand in (any strides, read-only)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["tensor_from_numpy", "transpose_copy"]


def tensor_from_numpy(array: np.ndarray, dtype: np.dtype | type | None = None) -> torch.Tensor:
    """A tensor sharing memory with ``array`` when possible, copying only when needed.

    Non-contiguous arrays are made contiguous and read-only arrays are copied, since torch
    tensors must be writable; the caller's array is never modified.
    """
    arr = np.ascontiguousarray(array, dtype=dtype)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def transpose_copy(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Contiguous copy of ``x`` with its last two axes swapped, optionally times ``scale``.

    An elementwise op writing into a fresh tensor is several times faster than
    ``x.transpose(-1, -2).contiguous()`` on CPU for the tall, narrow matrices the CRF uses.
    """
    swapped = x.transpose(-1, -2)
    out = x.new_empty(swapped.shape)
    torch.mul(swapped, 1 if scale is None else scale, out=out)
    return out
