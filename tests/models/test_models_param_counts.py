"""Parameter counts against Chen et al. Table 2 and independent hand formulas (meta device)."""

from __future__ import annotations

import pytest
import torch

from deepcrf.models import build
from deepcrf.models.vgg import VGG16

VGG_CONVS = [
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
]
VGG_CONV_PARAMS = sum(9 * i * o + o for i, o in VGG_CONVS)


def count(name: str, num_classes: int | None = 21, **options) -> int:
    with torch.device("meta"):  # build and count without allocating or initialising
        model = build(name, num_classes, **options)
    return sum(p.numel() for p in model.parameters())


def deeplab_formula(kernel: int, channels: int, k: int = 21, msc: bool = False) -> int:
    fc6 = kernel * kernel * 512 * channels + channels
    fc7 = channels * channels + channels
    head_in = channels + (640 if msc else 0)
    fc8 = head_in * k + k
    branches = sum(9 * c * 128 + 128 + 128 * 128 + 128 for c in (3, 64, 128, 256, 512))
    return VGG_CONV_PARAMS + fc6 + fc7 + fc8 + (branches if msc else 0)


def test_vgg_conv_params_are_the_known_14_7m():
    assert VGG_CONV_PARAMS == 14_714_688


@pytest.mark.parametrize(
    ("name", "paper_millions", "kernel", "channels"),
    [
        ("deeplab_7x7", 134.3, 7, 4096),
        ("deeplab", 65.1, 4, 4096),
        ("deeplab_4x4", 65.1, 4, 4096),
        ("deeplab_largefov", 20.5, 3, 1024),
    ],
)
def test_deeplab_counts_match_table2(name, paper_millions, kernel, channels):
    n = count(name)
    assert n == deeplab_formula(kernel, channels)
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.006
    # the paper rounds to 0.1M: the count should round to the printed value
    assert abs(n / 1e6 - paper_millions) <= 0.05 + 1e-9


@pytest.mark.parametrize(
    ("name", "kernel", "channels"),
    [
        ("deeplab_msc_7x7", 7, 4096),
        ("deeplab_msc", 4, 4096),
        ("deeplab_msc_4x4", 4, 4096),
        ("deeplab_msc_largefov", 3, 1024),
    ],
)
def test_msc_counts(name, kernel, channels):
    assert count(name) == deeplab_formula(kernel, channels, msc=True)


def test_fcn8s_count():
    k = 21
    expected = (
        VGG_CONV_PARAMS
        + 49 * 512 * 4096
        + 4096
        + 4096 * 4096
        + 4096  # fc6, fc7
        + (4096 + 1) * k
        + (512 + 1) * k
        + (256 + 1) * k  # score_fr, score_pool4, score_pool3
        + k * k * (4 * 4 + 4 * 4 + 16 * 16)  # three bias-free up-sampling layers
    )
    assert count("fcn8s", k) == expected


def test_featmap_unary_pairwise_counts():
    fc6 = 49 * 512 * 4096 + 4096
    block6 = 9 * 4096 * 512 + 512 + 9 * 512 * 512 + 512
    assert count("featmap_net", None) == VGG_CONV_PARAMS + fc6 + 3 * block6
    c, k = 4608, 21
    assert count("unary_net", k, in_channels=c) == c * 512 + 512 + 512 * k + k
    assert count("pairwise_net", k, in_channels=2 * c) == 2 * c * 512 + 512 + 512 * k * k + k * k


def test_vgg16_classifier_is_the_138m_imagenet_net():
    with torch.device("meta"):
        model = VGG16()
    assert sum(p.numel() for p in model.parameters()) == 138_357_544


def test_width_scales_every_family():
    for name, extra in [
        ("deeplab_largefov", {}),
        ("deeplab_msc", {}),
        ("fcn8s", {}),
        ("featmap_net", {}),
        ("refine_net", {}),
        ("unary_net", {"in_channels": 64}),
        ("pairwise_net", {"in_channels": 64}),
    ]:
        assert count(name, 21, width=1 / 16, **extra) < count(name, 21, **extra) / 10, name
