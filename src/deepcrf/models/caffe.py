"""Read the weights of a ``.caffemodel`` straight from the protobuf wire format.

No Caffe, no protoc, no generated code: a caffemodel is a ``NetParameter`` message and only a
handful of its fields matter for the weights:

* ``NetParameter``: ``layers`` = 2 (legacy ``V1LayerParameter``), ``layer`` = 100
  (``LayerParameter``); everything else (name, inputs, state, ...) is skipped.
* ``LayerParameter``: name = 1, type = 2 (string), blobs = 7.
* ``V1LayerParameter``: name = 4, type = 5 (enum), blobs = 6, and the even older
  ``V0LayerParameter`` nested as field 1 (name = 1, type = 2, blobs = 50).
* ``BlobProto``: legacy dims num / channels / height / width = 1..4 (Caffe uses them when
  present, so do we), data = 5 (float32, packed or not), shape = 7 (``BlobShape``: dim = 1,
  int64, packed or not), double_data = 8 (float64, packed or not).

Unknown fields are skipped by their wire type. The file is streamed: each layer message is read
into its own buffer and the arrays are views into it (``np.frombuffer``), so a 540 MB file is
held once, and a converter that consumes :func:`iter_caffemodel` lazily holds one layer at a
time. Values are little-endian on the wire; on a big-endian host they are byte-swapped into
native float32/float64 arrays. A file that is not a caffemodel (garbage, truncated, a text
prototxt) raises :class:`CaffeModelError` naming the file and the byte offset; parsing always
advances, so it never hangs.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["CaffeLayer", "CaffeModelError", "iter_caffemodel", "read_caffemodel"]

# wire types
VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5

#: Names of the V1LayerParameter.LayerType enum values that carry weights (for messages).
V1_TYPES = {
    4: "Convolution",
    14: "InnerProduct",
    39: "Deconvolution",
    0: "None",
}

_LITTLE = sys.byteorder == "little"
_FLOAT_TAG = (5 << 3) | FIXED32  # BlobProto.data, one unpacked value
_DOUBLE_TAG = (8 << 3) | FIXED64  # BlobProto.double_data, one unpacked value


class CaffeModelError(ValueError):
    """The file is not a readable caffemodel (names the file and what was wrong)."""


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and weight blobs (numpy arrays, Caffe shapes)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the blobs, in order."""
        return [tuple(b.shape) for b in self.blobs]


class _Bad(Exception):
    """Internal: a parse error at ``offset`` (converted to CaffeModelError with the file)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


# ----------------------------------------------------------------------------- wire format
def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint of ``buf`` at ``pos`` (before ``end``); returns (value, next pos)."""
    value = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Bad("truncated varint", start)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Bad("varint longer than 10 bytes", start)


def _next_field(buf, pos: int, end: int) -> tuple[int, int, int, int, int]:
    """The field at ``pos``: (number, wire type, a, b, next pos).

    VARINT: a is the value. FIXED32/FIXED64/LENGTH: ``buf[a:b]`` is the payload.
    """
    tag_at = pos
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise _Bad("field number 0", tag_at)
    if wire == VARINT:
        value, pos = _varint(buf, pos, end)
        return number, wire, value, value, pos
    if wire in (FIXED32, FIXED64):
        length = 4 if wire == FIXED32 else 8
    elif wire == LENGTH:
        length, pos = _varint(buf, pos, end)
    else:  # groups (3, 4) are not used by caffe.proto; 6, 7 do not exist
        raise _Bad(f"unsupported wire type {wire} (field {number})", tag_at)
    if pos + length > end:
        raise _Bad(f"field {number} runs past the end of its message", tag_at)
    return number, wire, pos, pos + length, pos + length


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, a, b) for each field of ``buf[pos:end]``."""
    while pos < end:
        number, wire, a, b, pos = _next_field(buf, pos, end)
        yield number, wire, a, b


def _string(buf, start: int, end: int, offset: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad("a layer name is not UTF-8", offset) from exc


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` (little-endian view) as a native-endian array (a copy only on big endian)."""
    return array if _LITTLE else array.astype(array.dtype.newbyteorder("="))


def _unpacked_run(
    buf, pos: int, end: int, tag: int, size: int, dtype: str
) -> tuple[np.ndarray, int]:
    """Values of consecutive unpacked records ``tag`` + ``size`` bytes starting at ``pos``.

    Each record is 1 tag byte and a fixed-size value, so a run of them is a strided array
    (read with one structured ``np.frombuffer``) rather than a Python loop per value.
    """
    stride = 1 + size
    available = (end - pos) // stride
    tags = np.frombuffer(buf, np.uint8, count=available * stride, offset=pos)[::stride]
    mismatch = np.flatnonzero(tags != tag)
    count = int(mismatch[0]) if mismatch.size else available
    if count == 0:  # the tag is there but its value runs past the message
        raise _Bad("truncated unpacked value", pos)
    records = np.frombuffer(
        buf, np.dtype([("tag", "u1"), ("value", dtype)]), count=count, offset=pos
    )
    return _native(np.ascontiguousarray(records["value"])), pos + count * stride


def _blob(buf, start: int, end: int) -> np.ndarray:
    """Parse one BlobProto payload ``buf[start:end]`` into an array of its Caffe shape."""
    legacy: dict[int, int] = {}
    dims: list[int] = []
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    pos = start
    while pos < end:
        tag_at = pos
        if buf[pos] == _FLOAT_TAG:  # unpacked float data: a run of tag + value records
            values, pos = _unpacked_run(buf, pos, end, _FLOAT_TAG, 4, "<f4")
            floats.append(values)
            continue
        if buf[pos] == _DOUBLE_TAG:  # unpacked double data
            values, pos = _unpacked_run(buf, pos, end, _DOUBLE_TAG, 8, "<f8")
            doubles.append(values)
            continue
        number, wire, a, b, pos = _next_field(buf, pos, end)
        if number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number] = a
        elif number == 5 and wire == LENGTH:
            if (b - a) % 4:
                raise _Bad("packed float data is not a multiple of 4 bytes", tag_at)
            floats.append(_native(np.frombuffer(buf, "<f4", count=(b - a) // 4, offset=a)))
        elif number == 8 and wire == LENGTH:
            if (b - a) % 8:
                raise _Bad("packed double data is not a multiple of 8 bytes", tag_at)
            doubles.append(_native(np.frombuffer(buf, "<f8", count=(b - a) // 8, offset=a)))
        elif number == 7 and wire == LENGTH:
            dims = _shape(buf, a, b)
    if floats and doubles:
        raise _Bad("blob holds both float and double data", start)
    parts = floats or doubles
    if not parts:
        data = np.zeros(0, np.float32)
    elif len(parts) == 1:
        data = parts[0]
    else:
        data = np.concatenate(parts)
    if legacy:
        shape = tuple(legacy.get(i, 1) for i in (1, 2, 3, 4))
    elif dims:
        shape = tuple(dims)
    else:
        shape = (data.size,)
    if math.prod(shape) != data.size:  # Python ints: no overflow on garbage dims
        raise _Bad(f"blob shape {shape} does not match its {data.size} values", start)
    return data.reshape(shape)


def _shape(buf, start: int, end: int) -> list[int]:
    """BlobShape.dim (field 1, int64, packed or not)."""
    dims: list[int] = []
    for number, wire, a, b in _fields(buf, start, end):
        if number != 1:
            continue
        if wire == VARINT:
            dims.append(a)
        elif wire == LENGTH:
            pos = a
            while pos < b:
                value, pos = _varint(buf, pos, b)
                dims.append(value)
    if any(d < 0 or d >= 2**62 for d in dims):
        raise _Bad(f"invalid blob dimensions {dims}", start)
    return dims


#: (name field, type field, blobs field) of LayerParameter, V1LayerParameter, V0LayerParameter
_LAYOUTS = {"layer": (1, 2, 7), "v1": (4, 5, 6), "v0": (1, 2, 50)}


def _layer(buf, start: int, end: int, layout: str) -> CaffeLayer:
    name_field, type_field, blobs_field = _LAYOUTS[layout]
    name, kind, blobs = None, "", []
    v0 = None
    for number, wire, a, b in _fields(buf, start, end):
        if number == name_field and wire == LENGTH:
            name = _string(buf, a, b, a)
        elif number == type_field and wire == LENGTH:
            kind = _string(buf, a, b, a)
        elif number == type_field and wire == VARINT:
            kind = V1_TYPES.get(a, f"V1 type {a}")
        elif number == blobs_field and wire == LENGTH:
            blobs.append(_blob(buf, a, b))
        elif layout == "v1" and number == 1 and wire == LENGTH:
            v0 = (a, b)
    if v0 is not None and name is None and not blobs:
        return _layer(buf, v0[0], v0[1], "v0")
    if name is None:
        raise _Bad("a layer without a name", start)
    return CaffeLayer(name, kind, blobs)


# ----------------------------------------------------------------------------- file level
def _read_varint(f: BinaryIO) -> int | None:
    """A varint read from the file (None at a clean end of file)."""
    value = shift = 0
    start = f.tell()
    while True:
        byte = f.read(1)
        if not byte:
            if f.tell() == start:
                return None
            raise _Bad("truncated varint", start)
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift >= 70:
            raise _Bad("varint longer than 10 bytes", start)


def iter_caffemodel(path: str | os.PathLike) -> Iterator[CaffeLayer]:
    """Yield the layers of the caffemodel at ``path`` that hold weights, in file order.

    Streams the file one layer message at a time. Raises ``FileNotFoundError`` for a missing
    file and :class:`CaffeModelError` (naming the file) for anything that is not a caffemodel.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caffemodel not found: {path}")
    size = path.stat().st_size
    found = 0
    with path.open("rb") as f:
        try:
            while True:
                tag_at = f.tell()
                key = _read_varint(f)
                if key is None:
                    break
                number, wire = key >> 3, key & 7
                if number == 0 or wire in (START_GROUP, END_GROUP) or wire > 5:
                    raise _Bad(f"invalid field header (field {number}, wire type {wire})", tag_at)
                if wire == VARINT:
                    if _read_varint(f) is None:
                        raise _Bad("truncated varint", tag_at)
                    continue
                if wire in (FIXED32, FIXED64):
                    skip = 4 if wire == FIXED32 else 8
                else:
                    skip = _read_varint(f)
                    if skip is None:
                        raise _Bad("truncated length", tag_at)
                start = f.tell()
                if start + skip > size:
                    raise _Bad(
                        f"field {number} needs {skip} bytes but the file ends after "
                        f"{size - start} (truncated?)",
                        tag_at,
                    )
                if wire != LENGTH or number not in (2, 100):
                    f.seek(skip, os.SEEK_CUR)
                    continue
                buf = bytearray(skip)  # writable, so the arrays are writable views
                if f.readinto(buf) != skip:
                    raise _Bad("file ended while reading a layer (truncated?)", tag_at)
                try:
                    layer = _layer(buf, 0, skip, "layer" if number == 100 else "v1")
                except _Bad as exc:
                    raise _Bad(str(exc), start + exc.offset) from None
                if layer.blobs:
                    found += 1
                    yield layer
        except _Bad as exc:
            raise CaffeModelError(
                f"{path} is not a readable caffemodel: {exc} at byte {exc.offset} "
                f"(file size {size})"
            ) from None
    if not found:
        raise CaffeModelError(
            f"{path} holds no layers with weights: not a caffemodel (a .prototxt or another "
            "protobuf file?)"
        )


def read_caffemodel(path: str | os.PathLike) -> OrderedDict[str, list[np.ndarray]]:
    """Ordered mapping layer name -> weight blobs (numpy arrays in Caffe's shapes).

    Layers without weights are left out. A name given to two weighted layers is an error.
    """
    layers: OrderedDict[str, list[np.ndarray]] = OrderedDict()
    for layer in iter_caffemodel(path):
        if layer.name in layers:
            raise CaffeModelError(f"{path}: two layers with weights are named {layer.name!r}")
        layers[layer.name] = layer.blobs
    return layers
