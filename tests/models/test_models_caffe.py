"""The caffemodel reader against files written by the protobuf runtime (independent encoder)."""

from __future__ import annotations

import numpy as np
import pytest

from caffemodel_writer import messages, write_caffemodel
from deepcrf.models import caffe
from deepcrf.models.caffe import CaffeModelError, iter_caffemodel, read_caffemodel

RNG = np.random.default_rng(0)


def _layers():
    return [
        ("conv1_1", [RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)]),
        ("fc6", [RNG.standard_normal((6, 4 * 2 * 2)), RNG.standard_normal(6)]),
        ("inference1", [RNG.standard_normal((1, 1, 3, 3)) for _ in range(3)]),
        ("scalar", [np.array([1.5])]),
    ]


FORMATS = [
    pytest.param({}, id="layer-shape-packed"),
    pytest.param({"packed": False}, id="layer-shape-unpacked"),
    pytest.param({"legacy": True}, id="layer-legacy-dims"),
    pytest.param({"v1": True}, id="v1-legacy-packed"),
    pytest.param({"v1": True, "packed": False}, id="v1-legacy-unpacked"),
    pytest.param({"v1": True, "legacy": False}, id="v1-shape"),
    pytest.param({"v1": True, "v0": True}, id="v0-in-v1"),
    pytest.param({"double": True}, id="double-packed"),
    pytest.param({"double": True, "packed": False, "v1": True}, id="double-unpacked-v1"),
    pytest.param({"extras": False}, id="no-extras"),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, fmt):
    layers = _layers()
    path = write_caffemodel(tmp_path / "m.caffemodel", layers, **fmt)
    read = read_caffemodel(path)
    assert list(read) == [name for name, _ in layers]  # file order, blobless layers left out
    legacy = fmt.get("legacy", fmt.get("v1", False))
    dtype = np.float64 if fmt.get("double") else np.float32
    for name, blobs in layers:
        assert len(read[name]) == len(blobs)
        for want, got in zip(blobs, read[name]):
            shape = (1,) * (4 - want.ndim) + want.shape if legacy else want.shape
            assert got.shape == shape
            assert got.dtype == dtype and got.dtype.isnative
            np.testing.assert_array_equal(got.ravel(), want.ravel().astype(dtype))
            assert got.flags.writeable


def test_unpacked_file_is_really_unpacked(tmp_path):
    layers = [("big", [RNG.standard_normal(20000).astype(np.float32)])]
    packed = write_caffemodel(tmp_path / "p.caffemodel", layers, extras=False)
    unpacked = write_caffemodel(tmp_path / "u.caffemodel", layers, packed=False, extras=False)
    # one tag byte per value more: the reader's vectorised run path was exercised
    assert unpacked.stat().st_size - packed.stat().st_size >= 20000 - 8
    np.testing.assert_array_equal(read_caffemodel(unpacked)["big"][0], layers[0][1][0])


def test_interleaved_unpacked_runs_concatenate(tmp_path):
    m = messages(packed=False)
    blob = m.BlobProto()
    blob.data.extend([1.0, 2.0])
    blob.shape.dim.extend([4])
    tail = m.BlobProto()
    tail.data.extend([3.0, 4.0])
    net = m.NetParameter()
    layer = net.layer.add(name="x")
    # data, shape, data: the two runs of field 5 belong to one repeated field
    layer.blobs.add().ParseFromString(blob.SerializeToString() + tail.SerializeToString())
    path = tmp_path / "x.caffemodel"
    path.write_bytes(net.SerializeToString())
    np.testing.assert_array_equal(read_caffemodel(path)["x"][0], [1, 2, 3, 4])


def test_layer_type_and_shapes(tmp_path):
    path = write_caffemodel(tmp_path / "a.caffemodel", _layers()[:1], v1=True)
    (layer,) = list(iter_caffemodel(path))
    assert layer.type == "Convolution"
    assert layer.shapes == [(4, 3, 3, 3), (1, 1, 1, 4)]
    path = write_caffemodel(tmp_path / "b.caffemodel", _layers()[:1])
    assert next(iter_caffemodel(path)).type == "Convolution"


def test_streams_layer_by_layer(tmp_path):
    path = write_caffemodel(tmp_path / "m.caffemodel", _layers(), extras=False)
    with path.open("ab") as f:
        f.write(b"\xff" * 7)  # garbage after the layers
    layers = iter_caffemodel(path)
    assert next(layers).name == "conv1_1"  # read before the garbage is reached
    with pytest.raises(CaffeModelError, match=r"m\.caffemodel"):
        list(layers)


def test_native_byte_order_conversion(monkeypatch):
    big = np.arange(5, dtype=">f4")
    monkeypatch.setattr(caffe, "_LITTLE", False)
    out = caffe._native(big)
    assert out.dtype.isnative and out.dtype.itemsize == 4
    np.testing.assert_array_equal(out, np.arange(5))


def test_big_endian_host_reads_the_same_values(tmp_path, monkeypatch):
    layers = _layers()
    path = write_caffemodel(tmp_path / "m.caffemodel", layers, packed=False, double=True)
    expected = read_caffemodel(path)
    monkeypatch.setattr(caffe, "_LITTLE", False)  # forces the byte-order conversion path
    got = read_caffemodel(path)
    for name in expected:
        for a, b in zip(expected[name], got[name]):
            assert b.dtype.isnative
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)), id="random-bytes"),
        pytest.param(b'name: "VGG"\nlayers { name: "conv1_1" type: CONVOLUTION }\n', id="prototxt"),
        pytest.param(b"\x80" * 64, id="endless-varint"),
        pytest.param(b"\x12\xff\xff\xff\xff\x0f", id="huge-length"),
        pytest.param(b"\x0f\x01", id="bad-wire-type"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x0a\x03abc", id="no-layers"),
    ],
)
def test_garbage_is_a_clear_error(tmp_path, content):
    path = tmp_path / "garbage.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffeModelError, match=r"garbage\.caffemodel"):
        read_caffemodel(path)


def test_truncated_files_are_errors(tmp_path):
    path = write_caffemodel(tmp_path / "m.caffemodel", _layers(), v1=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    for size in sorted({1, 2, 5, 17, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 1}):
        cut.write_bytes(data[:size])
        with pytest.raises(CaffeModelError, match=r"cut\.caffemodel"):
            read_caffemodel(cut)


def test_blob_shape_must_match_its_data(tmp_path):
    m = messages()
    net = m.NetParameter()
    blob = net.layer.add(name="bad").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CaffeModelError, match=r"shape \(2, 3\) does not match its 5 values"):
        read_caffemodel(path)


def test_duplicate_weighted_names(tmp_path):
    one = _layers()[0]
    path = write_caffemodel(tmp_path / "d.caffemodel", [one, one])
    with pytest.raises(CaffeModelError, match="two layers with weights are named 'conv1_1'"):
        read_caffemodel(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.caffemodel"):
        read_caffemodel(tmp_path / "nope.caffemodel")


def _owner(array: np.ndarray):
    while isinstance(array.base, np.ndarray):
        array = array.base
    base = array.base
    return base.obj if isinstance(base, memoryview) else base


def test_packed_blobs_are_views_into_one_buffer_per_layer(tmp_path):
    layers = _layers()
    path = write_caffemodel(tmp_path / "m.caffemodel", layers)
    size = path.stat().st_size
    read = read_caffemodel(path)
    for name, blobs in read.items():
        owners = {id(_owner(b)) for b in blobs}
        assert len(owners) == 1, name  # no copy per blob: one buffer, the layer message
        assert len(_owner(blobs[0])) < size  # ... not the whole file


@pytest.mark.parametrize("tail", [b"\x2d\x00\x00", b"\x41\x00\x00\x00\x00", b"\x2d"])
def test_unpacked_value_cut_inside_its_message(tmp_path, tail):
    """A float / double tag whose value runs past the blob message (not the file): an error."""
    m = messages()
    net = m.NetParameter()
    blob = bytes([0x08, 0x01]) + tail  # num = 1, then the cut value
    layer = bytes([0x0A, 0x01]) + b"x" + bytes([0x3A, len(blob)]) + blob  # name, blobs
    data = bytes([0xA2, 0x06, len(layer)]) + layer  # NetParameter.layer (field 100)
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(net.SerializeToString() + data)
    with pytest.raises(CaffeModelError, match="truncated unpacked value"):
        read_caffemodel(path)


def test_mutated_files_parse_or_fail_cleanly(tmp_path):
    """Random byte changes and cuts: a clean result or a CaffeModelError, nothing else."""
    rng = np.random.default_rng(7)
    path = write_caffemodel(tmp_path / "m.caffemodel", _layers(), v1=True, packed=False)
    data = path.read_bytes()
    mutated = tmp_path / "mutated.caffemodel"
    for _ in range(150):
        d = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            d[int(rng.integers(len(d)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            d = d[: int(rng.integers(len(d)))]
        mutated.write_bytes(bytes(d))
        try:
            read_caffemodel(mutated)
        except CaffeModelError:
            pass
