"""build() / list_models(): names, argument checking."""

from __future__ import annotations

import pytest

from deepcrf.models import MODELS, build, list_models

EXPECTED = {
    "deeplab_7x7",
    "deeplab",
    "deeplab_4x4",
    "deeplab_largefov",
    "deeplab_msc_7x7",
    "deeplab_msc",
    "deeplab_msc_4x4",
    "deeplab_msc_largefov",
    "fcn8s",
    "crfasrnn",
    "joint_deeplab_crf",
    "featmap_net",
    "unary_net",
    "pairwise_net",
    "refine_net",
    "contextual_crf",
}


def test_names():
    assert set(MODELS) == EXPECTED
    assert list_models() == sorted(EXPECTED)


def test_build_records_config():
    model = build("unary_net", num_classes=3, in_channels=8, width=0.25)
    assert model.config == {"name": "unary_net", "num_classes": 3, "in_channels": 8, "width": 0.25}
    assert model.fc1.out_channels == 128 and model.fc2.out_channels == 3


def test_featmap_ignores_num_classes():
    a = build("featmap_net", num_classes=21, width=1 / 16)
    b = build("featmap_net", num_classes=None, width=1 / 16)
    assert a.out_channels == b.out_channels == 288


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("resnet", 21), {}, ValueError, "unknown model 'resnet'"),
        (("deeplab", 0), {}, ValueError, "num_classes"),
        (("deeplab", None), {}, ValueError, "num_classes"),
        (("deeplab", 2.5), {}, ValueError, "num_classes"),
        (("deeplab", 21), {"width": 0}, ValueError, "width"),
        (("unary_net", 21), {"in_channels": 8, "width": -1}, ValueError, "width"),
        (("deeplab", 21), {"colour": "red"}, TypeError, "bad options for model 'deeplab'"),
        (("unary_net", 21), {}, TypeError, "in_channels"),
        (("refine_net", 21), {"output_stride": 8}, ValueError, "output_stride"),
        (("featmap_net", None), {"scales": []}, ValueError, "scales"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        build(*args, **kwargs)
