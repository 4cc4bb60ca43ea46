"""Reading class activation maps (.npy) safely: IRN's pickled dicts and plain arrays.

IRN (and PSA, AMN, ...) save ``np.save(path, {"keys": ..., "high_res": ..., "cam": ...})``:
a pickled dict whose values are numpy arrays or torch tensors. Unpickling runs whatever
callables the file names, so a CAM file is read through ``SafeUnpickler``, which admits only
dicts, lists, tuples, numpy arrays / dtypes / scalars and torch CPU tensors (converted to
numpy arrays on load; their storages go through ``torch.load(weights_only=True)``). Any
other global in the file (``os.system``, ``builtins.eval``, ...) is an error before anything
runs. Plain (K, H, W) float arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SafeUnpickler", "load_npy", "read_cams"]


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"only plain numpy arrays are allowed, got {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _load_storage(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    import torch
    from torch._utils import _rebuild_tensor_v2

    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("a tensor in the file is not built on a storage")
    if hooks:
        raise pickle.UnpicklingError("tensors with backward hooks are not allowed")
    tensor = _rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())
    return tensor.detach().cpu().numpy().copy()


def _rebuild_from_type(func, new_type, args, state):
    if func is not _rebuild_tensor or state:
        raise pickle.UnpicklingError("only plain torch tensors are allowed")
    return func(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda *a: _scalar(*a),
    ("numpy._core.multiarray", "scalar"): lambda *a: _scalar(*a),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): None,  # only as _rebuild_from_type_v2's type argument: a stand-in
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, numpy arrays/scalars and plain tensors."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            value = _ALLOWED[key]
            return value if value is not None else _Placeholder
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in a CAM file (only dicts, lists, numpy arrays "
            "and scalars are read)"
        )


class _Placeholder:
    """Stands in for ``torch.Tensor`` as a type argument; never called."""


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _check_plain(value: Any, where: str) -> None:
    """Every value is a container, array of numbers or scalar (no object arrays of others)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            for i, v in enumerate(value.ravel()):
                _check_plain(v, f"{where}.flat[{i}]")
    elif not isinstance(value, (int, float, bool, str, bytes, np.generic, type(None))):
        raise ValueError(f"{where}: unexpected {type(value).__name__} in a CAM file")


def load_npy(path: str | Path) -> Any:
    """An .npy file's content: a numeric array, or the (checked) object a pickled file holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--cams: no such file {path}")
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _shape, _fortran, dtype = read_header(handle)
        except ValueError as exc:
            raise ValueError(f"--cams: {path} is not an .npy file ({exc})") from None
        if not dtype.hasobject:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
        try:
            array = SafeUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as exc:
            raise ValueError(f"--cams: {path}: refused to unpickle: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"--cams: {path}: expected a pickled numpy array, got {type(array)}")
    value = array.item() if array.shape == () else array
    _check_plain(value, str(path.name))
    return value


def read_cams(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(cams (K, H, W) float32, keys (K,) int64) from a CAM .npy file.

    IRN's dict: ``high_res`` (K, H, W) and ``keys`` (the 0-based foreground classes). A
    plain (K, H, W) array: channel k is class k; channels that are zero everywhere (classes
    absent from the image) are dropped, as IRN's keys would leave them out.
    """
    content = load_npy(path)
    if isinstance(content, dict):
        missing = [k for k in ("keys", "high_res") if k not in content]
        if missing:
            raise ValueError(
                f"--cams: {path}: a dict CAM file needs 'keys' and 'high_res' (IRN's format), "
                f"missing {missing}; keys found: {sorted(map(str, content))}"
            )
        cams = np.asarray(content["high_res"])
        keys = np.asarray(content["keys"]).reshape(-1)
        if keys.size and not np.issubdtype(keys.dtype, np.integer):
            raise ValueError(f"--cams: {path}: 'keys' must be integer class indices")
        keys = keys.astype(np.int64)
        if cams.size == 0 and keys.size == 0 and cams.ndim != 3:
            raise ValueError(f"--cams: {path}: an empty 'high_res' must still be (0, H, W)")
    elif isinstance(content, np.ndarray) and content.ndim == 3:
        cams = content
        present = np.flatnonzero(cams.reshape(cams.shape[0], -1).any(1))
        cams, keys = cams[present], present.astype(np.int64)
    else:
        shape = getattr(content, "shape", None)
        raise ValueError(
            f"--cams: {path}: expected IRN's dict (keys, high_res) or a (K, H, W) array, got "
            f"{type(content).__name__}{'' if shape is None else ' of shape ' + str(shape)}"
        )
    if cams.ndim != 3:
        raise ValueError(f"--cams: {path}: CAMs must be (K, H, W), got shape {cams.shape}")
    if cams.shape[0] != keys.shape[0]:
        raise ValueError(f"--cams: {path}: {keys.shape[0]} keys for {cams.shape[0]} CAM channels")
    if not np.issubdtype(cams.dtype, np.floating):
        raise ValueError(f"--cams: {path}: CAMs must be floating-point, got {cams.dtype}")
    return np.ascontiguousarray(cams, dtype=np.float32), keys
