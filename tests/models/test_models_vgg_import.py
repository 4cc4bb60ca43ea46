"""ImageNet VGG-16 import from a generated torchvision-format state dict, fc decimation."""

from __future__ import annotations

import pytest
import torch

from deepcrf.models import build
from deepcrf.models.io import (
    TORCHVISION_VGG16_SHAPES,
    channel_step,
    decimate_fc,
    load_imagenet_vgg16,
    spatial_taps,
)
from deepcrf.models.vgg import VGG16

# torchvision.models.vgg16().state_dict() layout, written out by hand (never import torchvision)
TORCHVISION_KEYS = [
    f"features.{i}.{p}"
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    for p in ("weight", "bias")
] + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def imagenet_state(tmp_path_factory) -> tuple[dict[str, torch.Tensor], str]:
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in TORCHVISION_VGG16_SHAPES.items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg16-imagenet.pth"
    torch.save(state, path)
    return state, str(path)


def test_layout_is_torchvision():
    assert list(TORCHVISION_VGG16_SHAPES) == TORCHVISION_KEYS
    assert TORCHVISION_VGG16_SHAPES["classifier.0.weight"] == (4096, 25088)
    with torch.device("meta"):
        model = VGG16()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == TORCHVISION_VGG16_SHAPES
    with torch.device("meta"):
        deeplab = build("deeplab_largefov", 21)
    features = {k for k in deeplab.state_dict() if k.startswith("features.")}
    assert features == {k for k in TORCHVISION_KEYS if k.startswith("features.")}


def test_vgg16_round_trip(imagenet_state):
    state, path = imagenet_state
    model = VGG16()
    report = load_imagenet_vgg16(model, path)
    assert sorted(report.copied) == sorted(TORCHVISION_KEYS)
    assert report.converted == [] and report.initialised == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_spatial_and_channel_decimation_rules():
    assert spatial_taps(7) == list(range(7))
    assert spatial_taps(4) == [0, 2, 4, 6]
    assert spatial_taps(3) == [0, 3, 6]
    assert spatial_taps(1) == [3]
    with pytest.raises(ValueError, match="5x5"):
        spatial_taps(5)
    assert channel_step(1024) == 4 and channel_step(4096) == 1
    with pytest.raises(ValueError, match="1000"):
        channel_step(1000)


def test_decimate_fc_by_hand():
    """A 4-output linear layer over a 2 x 7 x 7 input, decimated element by element."""
    weight = torch.arange(4 * 2 * 49, dtype=torch.float32).reshape(4, 98)
    bias = torch.tensor([10.0, 11.0, 12.0, 13.0])
    same, b = decimate_fc(weight, bias, (4, 2, 7, 7), (2, 7, 7))
    for o in range(4):
        for c in range(2):
            for y in range(7):
                for x in range(7):  # torchvision flattens (C, H, W) row-major
                    assert same[o, c, y, x] == weight[o, c * 49 + y * 7 + x]
    assert torch.equal(b, bias)
    small, b = decimate_fc(weight, bias, (2, 2, 3, 3), (2, 7, 7))
    for i, o in enumerate((0, 2)):
        for c in range(2):
            for yi, y in enumerate((0, 3, 6)):
                for xi, x in enumerate((0, 3, 6)):
                    assert small[i, c, yi, xi] == weight[o, c * 49 + y * 7 + x]
    assert b.tolist() == [10.0, 12.0]
    with pytest.raises(ValueError, match="input channels"):
        decimate_fc(weight, bias, (4, 1, 7, 7), (2, 7, 7))


def test_deeplab_largefov_import_decimates_exactly(imagenet_state):
    state, path = imagenet_state
    model = build("deeplab_largefov", 21)
    fc8_before = model.fc8.weight.clone()
    report = load_imagenet_vgg16(model, path)
    assert sorted(report.converted) == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]
    assert sorted(report.initialised) == ["fc8.bias", "fc8.weight"]
    assert torch.equal(model.fc8.weight, fc8_before)
    for key in report.copied:
        assert torch.equal(model.state_dict()[key], state[key])
    w6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    fc6 = model.fc6.weight.detach()
    assert fc6.shape == (1024, 512, 3, 3)
    for i in (0, 1, 513, 1023):  # filter i of fc6 is ImageNet filter 4i at taps 0, 3, 6
        for yi, y in enumerate((0, 3, 6)):
            for xi, x in enumerate((0, 3, 6)):
                assert torch.equal(fc6[i, :, yi, xi], w6[4 * i, :, y, x])
        assert model.fc6.bias[i] == state["classifier.0.bias"][4 * i]
    w7 = state["classifier.3.weight"]
    fc7 = model.fc7.weight.detach()[:, :, 0, 0]
    assert torch.equal(fc7, w7[::4, ::4])
    assert torch.equal(model.fc7.bias.detach(), state["classifier.3.bias"][::4])


def test_featmap_import_keeps_the_7x7_fc6(imagenet_state):
    state, _ = imagenet_state
    model = build("featmap_net", None)
    report = load_imagenet_vgg16(model, state)
    assert report.converted == ["fc6.weight", "fc6.bias"]
    assert torch.equal(model.fc6.weight.flatten(1), state["classifier.0.weight"])
    assert all(k.startswith("block6.") for k in report.initialised)


def test_missing_and_unexpected_keys_are_listed(imagenet_state):
    state, _ = imagenet_state
    broken = {k: v for k, v in state.items() if k != "features.7.bias"}
    broken["features.1.running_mean"] = torch.zeros(64)
    model = build("deeplab_largefov", 21, width=1 / 16)
    with pytest.raises(ValueError, match=r"missing keys: features\.7\.bias") as info:
        load_imagenet_vgg16(model, broken)
    assert "unexpected keys: features.1.running_mean" in str(info.value)
    bad_shape = dict(state, **{"features.0.weight": torch.zeros(64, 3, 5, 5)})
    with pytest.raises(ValueError, match=r"features\.0\.weight: \(64, 3, 5, 5\)"):
        load_imagenet_vgg16(model, bad_shape)


def test_light_model_refuses_imagenet_weights(imagenet_state):
    state, _ = imagenet_state
    model = build("deeplab_largefov", 21, width=1 / 16)
    with pytest.raises(ValueError, match=r"width != 1.*features\.0\.weight"):
        load_imagenet_vgg16(model, state)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_imagenet_vgg16(VGG16(width=1 / 16), tmp_path / "nope.pth")
