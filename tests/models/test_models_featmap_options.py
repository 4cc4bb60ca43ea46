"""FeatMap-Net options for training from scratch (stride, trunk depth, fc6 size, batch norm)
and the fast sliding pyramid against plain 2-D max pooling."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.models import build
from deepcrf.models.featmap import sliding_max_pyramid


@pytest.mark.parametrize("shape", [(2, 6, 15, 17), (1, 3, 1, 1), (1, 2, 3, 9)])
@pytest.mark.parametrize("windows", [(5, 9), (9, 5), (3,), (1, 7), (7, 7), ()])
def test_sliding_pyramid_equals_max_pool2d_values_and_gradients(shape, windows):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)  # no ties: one argmax each
    weights = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in windows]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = sliding_max_pyramid(a, windows)
    ref = [F.max_pool2d(b, k, stride=1, padding=k // 2) for k in windows]
    for out, want in zip(got, ref, strict=True):
        assert out.is_contiguous() and torch.equal(out, want)
    if windows:
        sum((o * w).sum() for o, w in zip(got, weights, strict=True)).backward()
        sum((o * w).sum() for o, w in zip(ref, weights, strict=True)).backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stride", [16, 8, 4])
def test_output_stride_sets_the_map_size(stride):
    model = build("featmap_net", None, width=0.0625, output_stride=stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert model.output_stride == stride
    assert out.shape[-2:] == (
        math.ceil(round(1.2 * 97) / stride),
        math.ceil(round(1.2 * 131) / stride),
    )


def test_small_trunk_with_batch_norm():
    model = build(
        "featmap_net", None, width=0.0625, output_stride=4, blocks=3, fc6_kernel=1,
        fc6_channels=24, norm="batch", scales=[1.0], pyramid_windows=[3],
    ).eval()  # fmt: skip
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 7  # VGG-16 blocks 1-3
    assert model.fc6.kernel_size == (1, 1) and model.fc6.out_channels == 24
    assert isinstance(model.fc6_norm, nn.BatchNorm2d)
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        pools = model.pool_features(x)
        out = model(x)
    assert [p.shape[-2:] for p in pools] == [(20, 24), (10, 12), (10, 12)]
    assert out.shape == (2, 2 * 32, 10, 12)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"output_stride": 32}, "output_stride"),
        ({"fc6_kernel": 4}, "fc6_kernel"),
        ({"fc6_channels": 0}, "fc6_channels"),
        ({"norm": "layer"}, "norm"),
        ({"blocks": 6}, "blocks"),
        ({"blocks": 2, "output_stride": 8}, "output_stride 8 needs at least 3 blocks"),
    ],
)
def test_bad_options_are_named(options, name):
    with pytest.raises(ValueError, match=name):
        build("featmap_net", None, width=0.0625, **options)
