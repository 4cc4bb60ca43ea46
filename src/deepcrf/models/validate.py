"""Checks of model files before anything is allocated: errors name the file.

``read_header(path)`` parses a safetensors header by hand (8-byte length, JSON) and checks
it against the file size, so a truncated or corrupt file is a ``ValueError`` naming the path
instead of a library panic. ``check_config(path, config, header)`` validates the stored
``deepcrf.config`` (a known model name, a positive integer ``num_classes``, option values of
plain JSON types, finite numbers, ``width`` in (0, MAX_WIDTH]) and then estimates the
model's size by building it on the ``meta`` device (no memory): a config describing a
model larger than ``MAX_MODEL_BYTES`` or larger than the tensors the file holds is refused
before the real model is built, so a 172-byte file claiming ``width: 3`` cannot make
``load_model`` allocate a gigabyte.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["MAX_MODEL_BYTES", "MAX_WIDTH", "check_config", "is_safetensors", "read_header"]

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
MAX_MODEL_BYTES = 16 << 30
MAX_WIDTH = 4.0
MAX_CLASSES = 1 << 16
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_DTYPE_BYTES.update({"U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1})
_DTYPE_BYTES.update({"F8_E5M2": 1})


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file (a length, then a JSON object)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensor entries, metadata) of a safetensors file, checked against its size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file ({size} bytes, no header)")
        length = int.from_bytes(raw, "little")
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError(
                f"{path}: corrupt or truncated safetensors file (header of {length} bytes, "
                f"file of {size} bytes)"
            )
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: corrupt safetensors metadata (expected strings)")
    end = 0
    for name, entry in header.items():
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            shape = [int(s) for s in entry["shape"]]
            item = _DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: corrupt safetensors entry {name!r}: {exc!r}") from exc
        if min(shape, default=0) < 0 or stop - begin != math.prod(shape) * item or begin < 0:
            raise ValueError(f"{path}: corrupt safetensors entry {name!r} (size/offsets)")
        end = max(end, stop)
    if 8 + length + end > size:
        raise ValueError(
            f"{path}: truncated safetensors file: its tensors need {8 + length + end} bytes, "
            f"the file has {size}"
        )
    return header, metadata


def _check_value(path: Path, key: str, value: Any) -> None:
    if isinstance(value, list):
        for v in value:
            _check_value(path, key, v)
        return
    if isinstance(value, dict):  # nested options (e.g. a CRF layer's parameters)
        for k, v in value.items():
            _check_value(path, f"{key}.{k}", v)
        return
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"{path}: config option {key!r} has a {type(value).__name__} value")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: config option {key!r} is {value}")


def check_config(path: str | Path, config: Any, header: dict[str, Any]) -> dict[str, Any]:
    """The validated ``deepcrf.config`` of ``path`` (see the module docstring)."""
    from . import CLASS_FREE, MODELS, build

    path = Path(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: deepcrf.config must be a JSON object, got {config!r:.80}")
    name = config.get("name")
    if name not in MODELS:
        raise ValueError(
            f"{path}: unknown model name {name!r} in deepcrf.config; known: "
            f"{', '.join(sorted(MODELS))}"
        )
    classes = config.get("num_classes")
    class_free = name in CLASS_FREE and classes is None
    if not class_free and (
        isinstance(classes, bool) or not isinstance(classes, int) or not 0 < classes <= MAX_CLASSES
    ):
        raise ValueError(
            f"{path}: num_classes must be an integer in 1..{MAX_CLASSES}, got {classes!r}"
        )
    for key, value in config.items():
        _check_value(path, key, value)
    width = config.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH:
        raise ValueError(f"{path}: width must be a number in (0, {MAX_WIDTH}], got {width!r}")
    options = {k: v for k, v in config.items() if k not in ("name", "num_classes")}
    try:
        with torch.device("meta"):
            skeleton = build(name, classes, **options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: deepcrf.config does not describe a model: {exc}") from exc
    state = skeleton.state_dict()
    needed = sum(t.numel() for t in state.values())
    needed_bytes = sum(t.numel() * t.element_size() for t in state.values())
    stored = sum(math.prod(int(s) for s in entry["shape"]) for entry in header.values())
    if needed_bytes > MAX_MODEL_BYTES:
        raise ValueError(
            f"{path}: deepcrf.config describes a model of {needed_bytes / 2**30:.1f} GiB "
            f"(limit {MAX_MODEL_BYTES / 2**30:.0f} GiB)"
        )
    if needed > stored:
        raise ValueError(
            f"{path}: deepcrf.config describes a model of {needed} parameters but the file "
            f"holds {stored} tensor values; the file does not match its config"
        )
    return config
