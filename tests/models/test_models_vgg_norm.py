"""The ``norm`` option of the shared VGG-16 trunk (``deepcrf.models.vgg``) and of FCN-8s /
CRF-as-RNN: layer placement, pooling taps, GroupNorm's batch independence, save / load, and a
clear refusal of ImageNet weights."""

import pytest
import torch
from torch import nn

from deepcrf.models import build, load_imagenet_vgg16, load_model, save_safetensors
from deepcrf.models.vgg import (
    POOL_INDICES,
    group_count,
    norm_layer,
    pool_indices,
    run_with_taps,
    vgg16_features,
)


@pytest.mark.parametrize(
    ("channels", "groups"), [(1, 1), (4, 1), (8, 2), (12, 3), (16, 4), (32, 8), (512, 32), (7, 1)]
)
def test_group_count_keeps_at_least_four_channels_per_group(channels, groups):
    assert group_count(channels) == groups
    layer = norm_layer("group", channels)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups


def test_norm_layer_kinds_and_bad_value():
    assert isinstance(norm_layer(None, 8), nn.Identity)
    assert isinstance(norm_layer("batch", 8), nn.BatchNorm2d)
    with pytest.raises(ValueError, match="norm must be one of"):
        norm_layer("layer", 8)
    with pytest.raises(ValueError, match="norm must be one of"):
        vgg16_features(0.0625, norm="instance")


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_trunk_has_a_norm_after_every_conv_before_its_relu(norm):
    plain = vgg16_features(0.0625)
    features = vgg16_features(0.0625, norm=norm)
    assert pool_indices(plain) == POOL_INDICES
    layers = list(features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and len(pool_indices(features)) == 5
    kind = nn.BatchNorm2d if norm == "batch" else nn.GroupNorm
    for i in convs:
        assert isinstance(layers[i + 1], kind) and isinstance(layers[i + 2], nn.ReLU)
    # same pooling outputs' shapes at the moved indices
    x = torch.randn(1, 3, 37, 45)
    _, want = run_with_taps(plain, x)
    _, got = run_with_taps(features.eval(), x, pool_indices(features))
    assert [g.shape for g in got] == [w.shape for w in want]


@pytest.mark.parametrize("size", [(1, 1), (17, 23), (40, 40)])
def test_fcn8s_with_norm_keeps_the_output_size(size):
    model = build("fcn8s", 3, width=0.0625, norm="group").eval()
    assert model.taps == pool_indices(model.features)[2:4]
    assert isinstance(model.fc6_norm, nn.GroupNorm) and isinstance(model.fc7_norm, nn.GroupNorm)
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)


def test_fcn8s_without_norm_keeps_its_parameter_names():
    names = set(build("fcn8s", 3, width=0.0625).state_dict())
    assert "features.28.weight" in names and not any("norm" in n for n in names)


def test_group_norm_fcn8s_does_not_depend_on_the_batch():
    """GroupNorm in training mode: each image's scores are those it gets alone (the basis of
    DDP's equal gradients); BatchNorm's are not."""
    torch.manual_seed(0)
    x = torch.randn(3, 3, 24, 24)
    for norm, independent in (("group", True), ("batch", False)):
        model = build("fcn8s", 3, width=0.0625, dropout=0.0, norm=norm).train()
        for m in model.modules():  # score layers start at zero: give them values
            if isinstance(m, nn.Conv2d) and m.weight.abs().sum() == 0:
                nn.init.normal_(m.weight, std=0.1)
        with torch.no_grad():
            together, alone = model(x)[:2], model(x[:2])
        assert torch.allclose(together, alone, atol=1e-5) == independent


@pytest.mark.parametrize(
    ("name", "options", "cnn"),
    [("crfasrnn", {}, "fcn"), ("joint_deeplab_crf", {"fc6_dilation": 3}, "cnn")],
)
def test_cnn_crf_models_with_norm_save_and_load(tmp_path, name, options, cnn):
    model = build(name, 3, width=0.0625, norm="group", **options).eval()
    assert isinstance(getattr(model, cnn).fc6_norm, nn.GroupNorm)
    for p in getattr(model, cnn).parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    path = save_safetensors(model, tmp_path / "m.safetensors")
    loaded = load_model(path).eval()
    x = torch.randn(1, 3, 20, 22)
    image = torch.rand(1, 3, 20, 22) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, image), model(x, image), rtol=0, atol=0)


def test_imagenet_weights_are_refused_by_a_normalised_trunk():
    model = build("fcn8s", 3, width=0.0625, norm="batch")
    with pytest.raises(ValueError, match="norm"):
        load_imagenet_vgg16(model, {})
