"""Write caffemodels with the protobuf runtime: an encoder independent of deepcrf's reader.

The message classes are built at test time from descriptors (``descriptor_pb2`` +
``message_factory``) with caffe.proto's field numbers, in a packed and an unpacked flavour,
plus a few fields the reader must skip (strings, varints, fixed32 / fixed64, nested messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto

#: V1LayerParameter.LayerType values used by the writer
V1_CONVOLUTION, V1_DECONVOLUTION, V1_RELU, V1_MULTI_STAGE_MEANFIELD = 4, 39, 18, 43


def _field(msg, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None, packed=None):
    f = msg.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name
    if packed is not None:
        f.options.packed = packed


@cache
def messages(packed: bool = True) -> SimpleNamespace:
    """NetParameter & co. message classes; ``packed`` chooses the repeated numbers' encoding."""
    pkg = f"caffetest{'p' if packed else 'u'}"
    fd = descriptor_pb2.FileDescriptorProto(name=f"{pkg}.proto", package=pkg, syntax="proto2")
    rep = F.LABEL_REPEATED

    shape = fd.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, F.TYPE_INT64, rep, packed=packed)

    blob = fd.message_type.add(name="BlobProto")
    for i, n in enumerate(("num", "channels", "height", "width"), start=1):
        _field(blob, n, i, F.TYPE_INT32)
    _field(blob, "data", 5, F.TYPE_FLOAT, rep, packed=packed)
    _field(blob, "diff", 6, F.TYPE_FLOAT, rep, packed=packed)
    _field(blob, "shape", 7, F.TYPE_MESSAGE, type_name=f".{pkg}.BlobShape")
    _field(blob, "double_data", 8, F.TYPE_DOUBLE, rep, packed=packed)
    _field(blob, "double_diff", 9, F.TYPE_DOUBLE, rep, packed=packed)

    param = fd.message_type.add(name="ParamSpec")  # nested message to skip
    _field(param, "name", 1, F.TYPE_STRING)
    _field(param, "lr_mult", 3, F.TYPE_FLOAT)

    layer = fd.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, F.TYPE_STRING)
    _field(layer, "type", 2, F.TYPE_STRING)
    _field(layer, "bottom", 3, F.TYPE_STRING, rep)
    _field(layer, "top", 4, F.TYPE_STRING, rep)
    _field(layer, "loss_weight", 5, F.TYPE_FLOAT, rep, packed=False)  # fixed32 to skip
    _field(layer, "param", 6, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.ParamSpec")
    _field(layer, "blobs", 7, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.BlobProto")
    _field(layer, "phase", 10, F.TYPE_INT32)

    v0 = fd.message_type.add(name="V0LayerParameter")
    _field(v0, "name", 1, F.TYPE_STRING)
    _field(v0, "type", 2, F.TYPE_STRING)
    _field(v0, "num_output", 3, F.TYPE_UINT32)
    _field(v0, "blobs", 50, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.BlobProto")

    v1 = fd.message_type.add(name="V1LayerParameter")
    _field(v1, "layer", 1, F.TYPE_MESSAGE, type_name=f".{pkg}.V0LayerParameter")
    _field(v1, "bottom", 2, F.TYPE_STRING, rep)
    _field(v1, "top", 3, F.TYPE_STRING, rep)
    _field(v1, "name", 4, F.TYPE_STRING)
    _field(v1, "type", 5, F.TYPE_INT32)  # the LayerType enum is a varint on the wire
    _field(v1, "blobs", 6, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.BlobProto")
    _field(v1, "blobs_lr", 7, F.TYPE_FLOAT, rep, packed=False)

    net = fd.message_type.add(name="NetParameter")
    _field(net, "name", 1, F.TYPE_STRING)
    _field(net, "layers", 2, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.V1LayerParameter")
    _field(net, "input", 3, F.TYPE_STRING, rep)
    _field(net, "input_dim", 4, F.TYPE_INT32, rep, packed=False)
    _field(net, "force_backward", 5, F.TYPE_BOOL)
    _field(net, "some_double", 99, F.TYPE_DOUBLE)  # fixed64 at the top level, to skip
    _field(net, "layer", 100, F.TYPE_MESSAGE, rep, type_name=f".{pkg}.LayerParameter")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return SimpleNamespace(
        **{
            name: get(pool.FindMessageTypeByName(f"{pkg}.{name}"))
            for name in ("BlobProto", "LayerParameter", "V0LayerParameter",
                         "V1LayerParameter", "NetParameter")
        }
    )  # fmt: skip


def fill_blob(proto, array: np.ndarray, legacy: bool, double: bool) -> None:
    """Write ``array`` into a BlobProto: legacy num/channels/height/width or shape.dim."""
    array = np.asarray(array)
    if legacy:
        if array.ndim > 4:
            raise ValueError("legacy blobs have at most 4 dimensions")
        dims = (1,) * (4 - array.ndim) + array.shape
        proto.num, proto.channels, proto.height, proto.width = (int(d) for d in dims)
    else:
        proto.shape.dim.extend(int(d) for d in array.shape)
    flat = array.ravel()
    if double:
        proto.double_data.extend(flat.astype(np.float64).tolist())
    else:
        proto.data.extend(flat.astype(np.float32).tolist())


def write_caffemodel(
    path: Path,
    layers: Sequence[tuple[str, Sequence[np.ndarray]]],
    *,
    v1: bool = False,
    packed: bool = True,
    legacy: bool | None = None,
    double: bool = False,
    v0: bool = False,
    extras: bool = True,
) -> Path:
    """Write ``layers`` (name, blobs) as a caffemodel; ``legacy`` dims default to ``v1``.

    ``extras`` adds blobless layers and fields the reader must skip. ``v0`` nests each V1
    layer's content in the deprecated V0LayerParameter (field 1).
    """
    m = messages(packed)
    legacy = v1 if legacy is None else legacy
    net = m.NetParameter(name="test-net")
    if extras:
        net.input.append("data")
        net.input_dim.extend([1, 3, 8, 8])
        net.force_backward = True
        net.some_double = 2.5
    for name, blobs in layers:
        if v1:
            lay = net.layers.add()
            target = lay.layer if v0 else lay
            if v0:
                target.type = "conv"
            else:
                lay.type = V1_CONVOLUTION
            target.name = name
            if extras:
                lay.bottom.append("below")
                lay.blobs_lr.extend([1.0, 2.0])
        else:
            lay = net.layer.add(name=name, type="Convolution")
            target = lay
            if extras:
                lay.bottom.append("below")
                lay.top.append(name)
                lay.loss_weight.append(0.5)
                lay.param.add(name="w", lr_mult=1.0)
                lay.phase = 1
        for array in blobs:
            fill_blob(target.blobs.add(), array, legacy, double)
        if extras:  # an activation without weights after each layer
            if v1:
                net.layers.add(name=f"relu_{name}", type=V1_RELU)
            else:
                net.layer.add(name=f"relu_{name}", type="ReLU")
    path = Path(path)
    path.write_bytes(net.SerializeToString())
    return path
