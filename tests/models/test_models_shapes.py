"""Output shapes and strides for odd sizes, on light (width 1/16) variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepcrf.models import build, list_models
from deepcrf.models.deeplab import VARIANTS
from deepcrf.models.fcn import OFFSET_OUT, OFFSET_POOL3, OFFSET_POOL4, PAD

LIGHT = 1 / 16
DEEPLABS = [*VARIANTS, *(n.replace("deeplab", "deeplab_msc", 1) for n in VARIANTS)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def image(h: int, w: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, h, w)


def test_every_model_has_output_stride():
    for name in list_models():
        extra = {"in_channels": 8} if name in ("unary_net", "pairwise_net") else {}
        model = build(name, 21, width=LIGHT, **extra)
        assert hasattr(model, "output_stride"), name


@pytest.mark.parametrize("name", DEEPLABS)
def test_deeplab_gives_ceil_h_over_8(name):
    model = build(name, 21, width=LIGHT).eval()
    assert model.output_stride == 8
    with torch.no_grad():
        for h, w in [(161, 161), (33, 47), (64, 65), (1, 9)]:
            out = model(image(h, w))
            assert out.shape == (1, 21, math.ceil(h / 8), math.ceil(w / 8)), (h, w)


def test_acceptance_161():
    with torch.no_grad():
        for name, stride, side in [
            ("deeplab_largefov", 8, 21),
            ("deeplab_msc_largefov", 8, 21),
            ("fcn8s", 1, 161),
        ]:
            model = build(name, 21, width=LIGHT).eval()
            assert model.output_stride == stride
            assert model(image(161, 161)).shape == (1, 21, side, side)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (31, 33), (161, 161), (100, 57)])
def test_fcn8s_gives_exactly_h_by_w(h, w):
    model = build("fcn8s", 5, width=1 / 32).eval()
    with torch.no_grad():
        assert model(image(h, w, batch=2)).shape == (2, 5, h, w)


def test_fcn8s_crops_valid_for_all_sizes():
    """Caffe arithmetic of FCN-8s: every crop stays inside its map for 1 <= H <= 2000."""

    def pool(n):  # 2x2 / stride 2, ceil mode
        return math.ceil((n - 2) / 2) + 1

    for h in range(1, 2001):
        p3 = pool(pool(pool(h + 2 * PAD - 2)))  # conv1_1 with pad 100 adds 198
        p4 = pool(p3)
        fc7 = pool(p4) - 6  # 7x7 fc6 without padding
        up2 = 2 * fc7 + 2
        up4 = 2 * up2 + 2
        up8 = 8 * up4 + 8
        assert fc7 >= 1 and OFFSET_POOL4 + up2 <= p4 and OFFSET_POOL3 + up4 <= p3
        assert OFFSET_OUT + h <= up8


@pytest.mark.parametrize(("h", "w"), [(160, 160), (97, 131), (20, 20)])
def test_featmap_net_stride_16_of_the_1_2_scale(h, w):
    model = build("featmap_net", None, width=LIGHT).eval()
    assert model.output_stride == 16 and model.output_scale == 1.2
    with torch.no_grad():
        out = model(image(h, w))
    oh, ow = math.ceil(round(1.2 * h) / 16), math.ceil(round(1.2 * w) / 16)
    assert out.shape == (1, model.out_channels, oh, ow)
    assert model.out_channels == 3 * 3 * 32  # 3 scales x (map + 2 pyramid levels) x 512/16


def test_featmap_160_is_12x12():
    model = build("featmap_net", 21, width=LIGHT).eval()
    with torch.no_grad():
        assert model(image(160, 160)).shape[-2:] == (12, 12)


def test_pyramid_pooling_matches_sliding_window_max():
    """Channel groups 2 and 3 are 5x5 / 9x9 sliding maxima of group 1 (numpy reference)."""
    model = build("featmap_net", None, width=LIGHT).eval()
    with torch.no_grad():
        out = model(image(150, 170)).numpy()[0]
    c = out.shape[0] // 3
    base = out[:c]
    for group, k in enumerate((5, 9), start=1):
        padded = np.pad(base, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)), constant_values=-np.inf)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
        np.testing.assert_allclose(out[group * c : (group + 1) * c], windows.max(axis=(-1, -2)))


def test_unary_net_on_maps_and_vectors():
    net = build("unary_net", 7, in_channels=12, width=LIGHT)
    maps = torch.randn(2, 12, 5, 6)
    out = net(maps)
    assert out.shape == (2, 7, 5, 6)
    vectors = maps.permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(net(vectors), out.permute(0, 2, 3, 1).reshape(-1, 7))


def test_pairwise_net_reference_and_layouts():
    k, c = 4, 6
    net = build("pairwise_net", k, in_channels=2 * c, width=LIGHT)
    edges = torch.randn(11, 2 * c, dtype=torch.float32)
    out = net(edges)
    assert out.shape == (11, k * k)
    w1 = net.fc1.weight.detach().flatten(1).numpy()
    w2 = net.fc2.weight.detach().flatten(1).numpy()
    ref = np.maximum(edges.numpy() @ w1.T + net.fc1.bias.detach().numpy(), 0)
    ref = ref @ w2.T + net.fc2.bias.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    conv_layout = edges.T.reshape(1, 2 * c, 11, 1)
    torch.testing.assert_close(net(conv_layout)[0, :, :, 0].T, out)
    swapped = torch.cat([edges[:, c:], edges[:, :c]], dim=1)
    assert not torch.allclose(net(swapped), out)  # order of the two nodes matters


def test_unary_pairwise_reject_wrong_channels():
    net = build("pairwise_net", 3, in_channels=10)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(4, 9))


@pytest.mark.parametrize(("stride", "divisor"), [(2, 2), (4, 4)])
def test_refine_net_output_grid(stride, divisor):
    featmap = build("featmap_net", None, width=LIGHT).eval()
    refine = build("refine_net", 21, width=LIGHT, output_stride=stride).eval()
    h, w = 161, 98
    img = image(h, w)
    with torch.no_grad():
        pools = featmap.pool_features(img)
        assert [p.shape[-1] for p in pools] == [49, 25, 13, 7, 7]
        out = refine(pools, torch.randn(1, 21, 11, 7))
    assert out.shape == (1, 21, math.ceil(h / divisor), math.ceil(w / divisor))
    assert refine.output_stride == stride


def test_featmap_fuses_scales_as_documented():
    """Group s of the map is Conv Block 6 of scale s on the shared trunk, bilinearly resized."""
    import torch.nn.functional as F

    model = build("featmap_net", None, width=LIGHT).eval()
    img = image(90, 70)
    with torch.no_grad():
        out = model(img)
        c = model.block_channels
        for i, scale in enumerate((1.2, 0.8, 0.4)):
            size = (round(scale * 90), round(scale * 70))
            x = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
            x = model.block6[i](F.relu(model.fc6(model.features(x))))
            x = F.interpolate(x, size=out.shape[-2:], mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[:, i * c : (i + 1) * c], x)
