"""The ``norm`` option of DeepLab (and of the joint model's DeepLab): norm layers after every
trunk convolution and after fc6 / fc7, MSc taps at the moved pools, GroupNorm's batch
independence, the same network as before without it, save / load."""

import pytest
import torch
from torch import nn

from deepcrf.models import build
from deepcrf.models.vgg import POOL_INDICES, pool_indices


@pytest.mark.parametrize("name", ["deeplab_largefov", "deeplab_msc_largefov"])
@pytest.mark.parametrize("size", [(1, 1), (17, 23), (41, 40)])
def test_deeplab_with_norm_keeps_the_output_size(name, size):
    model = build(name, 3, width=0.0625, norm="group").eval()
    assert model.taps == pool_indices(model.features)[:4] != POOL_INDICES[:4]
    assert isinstance(model.fc6_norm, nn.GroupNorm) and isinstance(model.fc7_norm, nn.GroupNorm)
    norms = [m for m in model.features if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 13
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, -(-size[0] // 8), -(-size[1] // 8))


def test_msc_branches_read_the_pools_of_a_normalised_trunk():
    """The MSc head taps pool1-pool4 wherever the norm layers moved them: the branches get
    the same shapes as in the plain trunk (a wrong tap would be a conv output or a norm)."""
    plain = build("deeplab_msc_largefov", 3, width=0.0625)
    normed = build("deeplab_msc_largefov", 3, width=0.0625, norm="batch")
    assert plain.taps == POOL_INDICES[:4]
    for model in (plain, normed):
        assert all(isinstance(model.features[i], nn.MaxPool2d) for i in model.taps)


def test_deeplab_without_norm_is_unchanged():
    model = build("deeplab_largefov", 3, width=0.0625)
    names = set(model.state_dict())
    assert "features.28.weight" in names and not any("norm" in n for n in names)
    assert isinstance(model.fc6_norm, nn.Identity) and model.norm is None
    with pytest.raises(ValueError, match="norm must be one of"):
        build("deeplab_largefov", 3, width=0.0625, norm="layer")


def test_group_norm_deeplab_scores_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 33, 33)
    for norm, independent in (("group", True), ("batch", False)):
        model = build("deeplab_largefov", 3, width=0.0625, dropout=0.0, norm=norm).train()
        nn.init.normal_(model.fc8.weight, std=1.0)
        with torch.no_grad():
            together, alone = model(x)[:2], model(x[:2])
        assert torch.allclose(together, alone, atol=1e-5) == independent
