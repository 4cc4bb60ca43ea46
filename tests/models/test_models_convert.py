"""Converters: random-weight caffemodels in the published names, compared parameter by parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffemodel_writer import write_caffemodel
from deepcrf.models import load_model
from deepcrf.models.caffe import CaffeModelError
from deepcrf.models.convert import ConversionError, convert, convert_file
from released_layers import (
    WIDTH,
    c,
    deeplab_largefov,
    expected_deeplab,
    expected_fcn,
    fcn8s,
    rand,
    vgg,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_converted(model, layers, expected):
    """Every blob in ``expected`` landed, unchanged, in its parameter."""
    state = model.state_dict()
    blobs = dict(layers)
    for (layer, i), param in expected.items():
        blob = torch.from_numpy(np.asarray(blobs[layer][i], dtype=np.float32))
        assert blob.numel() == state[param].numel(), (layer, i, param)
        torch.testing.assert_close(state[param], blob.reshape(state[param].shape), rtol=0, atol=0)
    used = {layer for layer, _ in expected}
    return [name for name, _ in layers if name not in used]


@pytest.mark.parametrize(
    "fmt", [{"v1": True}, {}, {"v1": True, "packed": False}, {"double": True, "packed": False}]
)
def test_deeplab_largefov(tmp_path, rng, fmt):
    layers = deeplab_largefov(rng)
    path = write_caffemodel(tmp_path / "train2_iter_8000.caffemodel", layers, **fmt)
    model, report = convert(path, "deeplab_largefov")
    assert model.config["name"] == "deeplab_largefov" and model.config["pool5a"] is True
    assert model.config["normalize"] == "caffe" and model.config["width"] == WIDTH
    assert assert_converted(model, layers, expected_deeplab()) == []
    assert len(report.mapped) == 16 and report.left_out == []


def test_deeplab_variants_by_fc6_shape(tmp_path, rng):
    for kernel, channels, name in [(4, 4096, "deeplab"), (7, 4096, "deeplab_7x7"),
                                   (3, 1024, "deeplab_largefov")]:  # fmt: skip
        layers = [
            *vgg(rng),
            ("fc6", [rand(rng, c(channels), c(512), kernel, kernel), rand(rng, c(channels))]),
            ("fc7", [rand(rng, c(channels), c(channels), 1, 1), rand(rng, c(channels))]),
            ("fc8_voc12", [rand(rng, 21, c(channels), 1, 1), rand(rng, 21)]),
        ]
        path = write_caffemodel(tmp_path / f"{name}.caffemodel", layers, v1=True)
        model, _ = convert(path, "deeplab")
        assert model.config["name"] == name
        assert_converted(model, layers, expected_deeplab())


def test_deeplab_msc_largefov(tmp_path, rng):
    base = deeplab_largefov(rng)
    trunk, head = base[:-3], base[-3:]
    sources = [3, c(64), c(128), c(256), c(512)]
    branches = []
    for i, cin in enumerate(sources):  # names are not deepcrf's business: found by shape
        branches.append([
            (f"ms{i}_conv3", [rand(rng, c(128), cin, 3, 3), rand(rng, c(128))]),
            (f"ms{i}_conv1", [rand(rng, c(128), c(128), 1, 1), rand(rng, c(128))]),
            (f"ms{i}_score", [rand(rng, 21, c(128), 1, 1), rand(rng, 21)]),
        ])  # fmt: skip
    # layout like a prototxt: each branch next to its pooling layer, the sum at the end
    layers = [*trunk[:2], *branches[0], *branches[1], *trunk[2:], *branches[2], *branches[3],
              *branches[4], *head]  # fmt: skip
    path = write_caffemodel(tmp_path / "msc.caffemodel", layers, v1=True)
    model, report = convert(path, "deeplab_msc_largefov")
    assert model.config["name"] == "deeplab_msc_largefov"
    expected = {k: v for k, v in expected_deeplab().items() if k[0] != "fc8_voc12"}
    for i, branch in enumerate(branches):
        expected[(branch[0][0], 0)] = f"msc_branches.{i}.0.weight"
        expected[(branch[0][0], 1)] = f"msc_branches.{i}.0.bias"
        expected[(branch[1][0], 0)] = f"msc_branches.{i}.2.weight"
        expected[(branch[1][0], 1)] = f"msc_branches.{i}.2.bias"
    left = assert_converted(model, layers, expected)
    assert sorted(left) == sorted(["fc8_voc12"] + [b[2][0] for b in branches])
    # the classifiers: Caffe sums fc8_voc12(fc7) and each branch's score; deepcrf has one fc8
    fc, mc = c(1024), c(128)
    fc8 = model.fc8
    blobs = dict(layers)
    torch.testing.assert_close(fc8.weight[:, :fc], torch.from_numpy(blobs["fc8_voc12"][0]))
    bias = blobs["fc8_voc12"][1].astype(np.float64)
    for i, branch in enumerate(branches):
        block = fc8.weight[:, fc + i * mc : fc + (i + 1) * mc]
        torch.testing.assert_close(block, torch.from_numpy(branch[2][1][0]))
        bias = bias + branch[2][1][1]
    torch.testing.assert_close(fc8.bias, torch.from_numpy(bias.astype(np.float32)))
    # and the function: deepcrf's forward equals Caffe's sum of per-branch classifiers
    x = torch.randn(1, 3, 21, 27)
    with torch.no_grad():
        out = model(x)
        from deepcrf.models.vgg import POOL_INDICES, run_with_taps

        feats, pools = run_with_taps(model.features, x, POOL_INDICES[:4])
        h = model.fc7(torch.relu(model.fc6(model.pool5a(feats)))).relu()
        caffe = F.conv2d(h, torch.from_numpy(blobs["fc8_voc12"][0]),
                         torch.from_numpy(blobs["fc8_voc12"][1]))  # fmt: skip
        for branch_module, src, branch in zip(model.msc_branches, [x, *pools], branches):
            score = branch[2][1]
            caffe = caffe + F.conv2d(branch_module(src), torch.from_numpy(score[0]),
                                     torch.from_numpy(score[1]))  # fmt: skip
    torch.testing.assert_close(out, caffe, rtol=1e-4, atol=1e-4)
    assert any("MSc branch 4" in n for n in report.notes)


def test_vgg16_init(tmp_path, rng):
    layers = deeplab_largefov(rng, ip_fc=True)[:-1]  # vgg16_20M: fc6/fc7 as InnerProduct
    layers.append(("fc8", [rand(rng, c(1000), c(1024)), rand(rng, c(1000))]))  # ImageNet's
    path = write_caffemodel(tmp_path / "vgg16_20M.caffemodel", layers, v1=True)
    model, report = convert(path, "vgg16_init", num_classes=5)
    assert model.config["name"] == "deeplab_largefov" and model.fc8.out_channels == 5
    assert assert_converted(model, layers, expected_deeplab(classifier=False)) == ["fc8"]
    assert any(line.startswith("fc8:") for line in report.left_out)
    assert "fc8.weight" in report.initialised
    # vgg16_128: the 7x7 fc6 of VGG-16 -> deeplab_7x7
    layers = [*vgg(rng), ("fc6", [rand(rng, c(4096), c(512) * 49), rand(rng, c(4096))]),
              ("fc7", [rand(rng, c(4096), c(4096)), rand(rng, c(4096))])]  # fmt: skip
    path = write_caffemodel(tmp_path / "vgg16_128.caffemodel", layers, v1=True)
    model, _ = convert(path, "vgg16_init")
    assert model.config["name"] == "deeplab_7x7"
    assert_converted(model, layers, expected_deeplab(classifier=False))


@pytest.mark.parametrize(("names", "fmt"), [("crfasrnn", {"v1": True}), ("official", {})])
def test_fcn8s(tmp_path, rng, names, fmt):
    layers = fcn8s(rng, names=names)
    path = write_caffemodel(tmp_path / "fcn8s.caffemodel", layers, **fmt)
    model, _ = convert(path, "fcn8s")
    assert model.config["upscore2_bias"] is (names == "crfasrnn")
    assert model.config["normalize"]["mode"] == "caffe"
    assert assert_converted(model, layers, expected_fcn(names=names)) == []


def caffe_fcn8s_forward(blobs: dict, x: torch.Tensor) -> torch.Tensor:
    """FCN-8s as the Caffe net computes it, in plain torch on the blobs (crops 5 / 9 / 31)."""

    def t(name, i):
        return torch.from_numpy(np.asarray(blobs[name][i], dtype=np.float32))

    def conv(h, name, pad=0):
        w = t(name, 0)
        return F.conv2d(h, w.reshape(w.shape[0], -1, *w.shape[-2:]) if w.dim() == 4 else w,
                        t(name, 1).reshape(-1), padding=pad)  # fmt: skip

    h = x
    pools = []
    for block in (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"),
                  ("conv3_1", "conv3_2", "conv3_3"), ("conv4_1", "conv4_2", "conv4_3"),
                  ("conv5_1", "conv5_2", "conv5_3")):  # fmt: skip
        for name in block:
            h = F.relu(conv(h, name, pad=100 if name == "conv1_1" else 1))
        h = F.max_pool2d(h, 2, 2, ceil_mode=True)
        pools.append(h)
    h = F.relu(conv(h, "fc6"))
    h = F.relu(conv(h, "fc7"))
    h = conv(h, "score-fr")
    h = F.conv_transpose2d(h, t("score2", 0), t("score2", 1), stride=2)
    p4 = conv(pools[3], "score-pool4")[:, :, 5 : 5 + h.shape[2], 5 : 5 + h.shape[3]]
    h = F.conv_transpose2d(h + p4, t("score4", 0), stride=2)
    p3 = conv(pools[2], "score-pool3")[:, :, 9 : 9 + h.shape[2], 9 : 9 + h.shape[3]]
    h = F.conv_transpose2d(h + p3, t("upsample", 0), stride=8)
    return h[:, :, 31 : 31 + x.shape[2], 31 : 31 + x.shape[3]]


@pytest.mark.parametrize(("height", "width"), [(24, 31), (1, 1), (50, 37)])
def test_fcn8s_forward_matches_caffe_net(tmp_path, rng, height, width):
    layers = [(n, [b * 0.3 for b in blobs]) for n, blobs in fcn8s(rng)]  # keep activations tame
    path = write_caffemodel(tmp_path / "fcn8s.caffemodel", layers, v1=True)
    model, _ = convert(path, "fcn8s")
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        got = model(x)
        want = caffe_fcn8s_forward(dict(layers), x)
    assert got.shape == want.shape == (2, 21, height, width)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_class_count_that_does_not_fit(tmp_path, rng):
    path = write_caffemodel(tmp_path / "m.caffemodel", deeplab_largefov(rng), v1=True)
    with pytest.raises(ConversionError) as info:
        convert(path, "deeplab_largefov", num_classes=5)
    message = str(info.value)
    assert f"(21, {c(1024)}, 1, 1)" in message and f"(5, {c(1024)}, 1, 1)" in message
    assert "fc8_voc12" in message


def test_another_architecture_lists_unmatched_layers(tmp_path, rng):
    path = write_caffemodel(tmp_path / "fcn.caffemodel", fcn8s(rng), v1=True)
    with pytest.raises(ConversionError) as info:
        convert(path, "deeplab_largefov")
    message = str(info.value)
    assert "fcn.caffemodel does not fit --arch deeplab_largefov" in message
    assert "fc8_voc12" in message  # missing
    for name in ("score-fr", "score2", "upsample", "score-pool3"):  # not used
        assert name in message.split("does not use:")[1]
    assert f"({c(4096)}, {c(512)}, 7, 7)" in message  # fc6 shapes named
    assert f"({c(1024)}, {c(512)}, 3, 3)" in message


def test_garbage_and_missing_sources(tmp_path):
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CaffeModelError, match=r"bad\.caffemodel"):
        convert(bad, "fcn8s")
    with pytest.raises(FileNotFoundError, match=r"absent\.caffemodel"):
        convert(tmp_path / "absent.caffemodel", "fcn8s")
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        convert(bad, "resnet")


def test_convert_file_round_trip_and_atomicity(tmp_path, rng):
    layers = deeplab_largefov(rng)
    src = write_caffemodel(tmp_path / "m.caffemodel", layers, v1=True)
    out = tmp_path / "m.safetensors"
    convert_file(src, "deeplab_largefov", out)
    loaded = load_model(out)
    assert loaded.config["normalize"] == "caffe" and loaded.pool5a is not None
    assert_converted(loaded, layers, expected_deeplab())
    before = out.read_bytes()
    with pytest.raises(ConversionError):
        convert_file(src, "deeplab_largefov", out, num_classes=3)
    assert out.read_bytes() == before  # a failed conversion leaves the old output alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.caffemodel", "m.safetensors"]
    with pytest.raises(ValueError, match="safetensors"):
        convert_file(src, "deeplab_largefov", tmp_path / "m.caffemodel")


def test_vgg16_init_as_backbone_weights(tmp_path, rng):
    from deepcrf.models import build, load_imagenet_vgg16

    layers = deeplab_largefov(rng, ip_fc=True)[:-1]
    src = write_caffemodel(tmp_path / "vgg16_20M.caffemodel", layers, v1=True)
    out = tmp_path / "vgg16_20M.safetensors"
    convert_file(src, "vgg16_init", out)
    model = build("deeplab_largefov", 4, width=WIDTH)
    fc8 = model.fc8.weight.detach().clone()
    report = load_imagenet_vgg16(model, out)
    assert report.normalize == "caffe"
    assert set(report.initialised) == {"fc8.weight", "fc8.bias"}
    assert_converted(model, layers, expected_deeplab(classifier=False))
    assert torch.equal(model.fc8.weight, fc8)
    with pytest.raises(ValueError, match=r"fc6\.weight: model"):
        load_imagenet_vgg16(build("deeplab_7x7", 4, width=WIDTH), out)


def test_fcn8s_crop_offsets_follow_from_caffe_geometry():
    """Caffe's Crop offsets, derived from coordinate maps (in = s·out + (k-1)/2 - p for a
    convolution or pooling, out = (in - (k-1)/2 + p) / s for a deconvolution) of the
    reference net's layers, are the 5 / 9 / 31 that deepcrf's FCN8s (and the test above) use."""
    from deepcrf.models.fcn import OFFSET_OUT, OFFSET_POOL3, OFFSET_POOL4, PAD

    def conv(k, s=1, p=0):  # a map x_out -> x_in as (scale, shift)
        return (s, (k - 1) / 2 - p)

    def deconv(k, s):
        return (1 / s, -(k - 1) / 2 / s)

    def chain(*maps):  # data coordinate of a blob coordinate, through maps listed data-first
        a, b = 1.0, 0.0
        for s, t in maps:
            a, b = a * s, a * t + b
        return a, b

    trunk = [conv(3, p=PAD)] + [conv(2, 2)] * 3
    pool3 = chain(*trunk)
    pool4 = chain(*trunk, conv(2, 2))
    score = chain(*trunk, conv(2, 2), conv(2, 2), conv(7))  # pool5, fc6 (fc7 / score 1x1)
    up2 = chain(*trunk, conv(2, 2), conv(2, 2), conv(7), deconv(4, 2))
    up4 = chain(*trunk, conv(2, 2), conv(2, 2), conv(7), deconv(4, 2), deconv(4, 2))
    up8 = chain(*trunk, conv(2, 2), conv(2, 2), conv(7), deconv(4, 2), deconv(4, 2),
                deconv(16, 8))  # fmt: skip
    assert score[0] == 32 and up2[0] == pool4[0] == 16 and up4[0] == pool3[0] == 8
    assert (up2[1] - pool4[1]) / pool4[0] == OFFSET_POOL4 == 5
    assert (up4[1] - pool3[1]) / pool3[0] == OFFSET_POOL3 == 9
    assert up8[0] == 1 and -up8[1] == OFFSET_OUT == 31


def test_deeplab_msc_with_a_4x4_fc6(tmp_path, rng):
    layers = [*vgg(rng),
              ("fc6", [rand(rng, c(4096), c(512), 4, 4), rand(rng, c(4096))]),
              ("fc7", [rand(rng, c(4096), c(4096), 1, 1), rand(rng, c(4096))]),
              ("fc8_voc12", [rand(rng, 21, c(4096), 1, 1), rand(rng, 21)])]  # fmt: skip
    for i, cin in enumerate([3, c(64), c(128), c(256), c(512)]):
        layers += [(f"b{i}a", [rand(rng, c(128), cin, 3, 3), rand(rng, c(128))]),
                   (f"b{i}b", [rand(rng, c(128), c(128), 1, 1), rand(rng, c(128))]),
                   (f"b{i}c", [rand(rng, 21, c(128), 1, 1), rand(rng, 21)])]  # fmt: skip
    path = write_caffemodel(tmp_path / "msc.caffemodel", layers)
    model, _ = convert(path, "deeplab_msc_largefov")
    assert model.config["name"] == "deeplab_msc" and model.pool5a is None
    torch.testing.assert_close(model.msc_branches[3][2].weight, torch.from_numpy(layers[-5][1][0]))


def test_wrong_kind_of_file_gets_a_hint(tmp_path, rng):
    pth = tmp_path / "crfasrnn_weights.pth"
    torch.save({"conv1_1.weight": torch.zeros(2)}, pth)
    with pytest.raises(CaffeModelError, match="need --arch crfasrnn_pytorch"):
        convert(pth, "crfasrnn")
    caffemodel = write_caffemodel(tmp_path / "m.caffemodel", deeplab_largefov(rng))
    with pytest.raises(ConversionError, match="use --arch crfasrnn for"):
        convert(caffemodel, "crfasrnn_pytorch")


def caffe_largefov_forward(blobs: dict, x: torch.Tensor) -> torch.Tensor:
    """DeepLab-LargeFOV's public test net in plain torch: Caffe's pooling rounds up (ceil),
    conv5 dilated 2, pool5a average pooling (padding counted), fc6 dilation 12."""

    def conv(h, name, pad=1, dilation=1):
        w, b = (torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in blobs[name])
        return F.conv2d(h, w, b.reshape(-1), padding=pad, dilation=dilation)

    h = x
    blocks = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"), ("conv3_1", "conv3_2", "conv3_3"),
              ("conv4_1", "conv4_2", "conv4_3"), ("conv5_1", "conv5_2", "conv5_3"))  # fmt: skip
    for i, block in enumerate(blocks):
        for name in block:
            h = F.relu(conv(h, name, pad=2 if i == 4 else 1, dilation=2 if i == 4 else 1))
        h = F.max_pool2d(h, 3, 2 if i < 3 else 1, 1, ceil_mode=True)
    h = F.avg_pool2d(h, 3, 1, 1, count_include_pad=True)  # pool5a
    h = F.relu(conv(h, "fc6", pad=12, dilation=12))
    h = F.relu(conv(h, "fc7", pad=0))
    return conv(h, "fc8_voc12", pad=0)


def test_deeplab_largefov_forward_matches_caffe_net_on_odd_sizes(tmp_path, rng):
    """Equal to the Caffe net for odd sizes (the releases ran at 321 / 513); for even sizes
    Caffe's ceil pooling gives one more row / column than deepcrf's (documented)."""
    layers = [(n, [b * 0.5 for b in blobs]) for n, blobs in deeplab_largefov(rng)]
    path = write_caffemodel(tmp_path / "largefov.caffemodel", layers, v1=True)
    model, _ = convert(path, "deeplab_largefov")
    x = torch.randn(1, 3, 41, 33)
    with torch.no_grad():
        got, want = model(x), caffe_largefov_forward(dict(layers), x)
    assert got.shape == want.shape == (1, 21, 6, 5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
