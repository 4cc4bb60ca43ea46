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

    On CPU the fastest form depends on the shape: an elementwise op writing into a fresh
    tensor (reading strided) is several times faster than ``x.transpose(-1, -2).contiguous()``
    for wide matrices (labels x pixels -> pixels x labels), while ``copy_`` (writing
    strided) is 2-3x faster for tall ones with many columns (pixels x labels -> labels x
    pixels), and faster again block by block of rows for up to ``_BLOCKED_UP_TO`` columns
    (the marginals of a photo). Leading axes are handled one matrix at a time (a 3-D
    strided copy is slower).
    """
    swapped = x.transpose(-1, -2)
    out = x.new_empty(swapped.shape)
    if x.dim() > 2 and x.device.type == "cpu":
        flat_in, flat_out = x.reshape(-1, *x.shape[-2:]), out.view(-1, *out.shape[-2:])
        for source, target in zip(flat_in, flat_out):
            _transpose_into(source, target, scale)
        return out
    _transpose_into(x, out, scale)
    return out


_WIDE = 16  # tall inputs with at least this many columns transpose faster by copy_
#: Tall inputs with at most this many columns are copied in blocks of ``_BLOCK_BYTES``
#: of rows: each block's columns are written while its rows are in cache. A VOC photo's
#: (187500, 21) marginals: 3.1-3.5 ms in blocks against 8.7 ms whole on 2 threads, 3.8-4.4
#: against 10.4 on 1; at 60 columns and more blocks were no faster on 1 thread.
_BLOCKED_UP_TO = 32
_BLOCK_BYTES = 1 << 19


def _tall(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.shape[-2] > x.shape[-1] >= _WIDE


def _transpose_into(x: torch.Tensor, out: torch.Tensor, scale: float | None) -> None:
    """``out = x^T * scale`` for ``out`` contiguous (see ``transpose_copy``)."""
    swapped = x.transpose(-1, -2)
    if _tall(x):
        rows, columns = x.shape[-2:]
        step = _BLOCK_BYTES // (columns * x.element_size())
        if columns > _BLOCKED_UP_TO or rows <= step:
            out.copy_(swapped)
        else:
            for start in range(0, rows, step):
                out[:, start : start + step].copy_(swapped[:, start : start + step])
        if scale is not None:
            out.mul_(scale)
    else:
        torch.mul(swapped, 1 if scale is None else scale, out=out)
