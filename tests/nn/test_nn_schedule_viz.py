"""Two-stage parameter groups and the compatibility heatmap."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from deepcrf.nn import DenseCRF, two_stage_param_groups
from deepcrf.viz import plot_compatibility


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))


def test_stage_one_trains_the_unary_only_with_a_faster_top():
    cnn, crf = small_cnn(), DenseCRF(4, learn_compat=True)
    groups = two_stage_param_groups(cnn, crf, 1, top=("2.",), lr_unary=1e-3, lr_top=1e-2)
    assert [g["name"] for g in groups] == ["unary", "unary_top"]
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in cnn[2].parameters()}
    crf_ids = {id(p) for p in crf.parameters()}
    assert not any(id(p) in crf_ids for g in groups for p in g["params"])
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted by torch.optim


def test_stage_two_is_joint_with_separate_rates_and_no_decay_on_the_crf():
    cnn, crf = small_cnn(), DenseCRF(4, learn_compat=True, learn_bandwidths=True)
    groups = two_stage_param_groups(cnn, crf, 2, lr_joint=1e-4, lr_crf=1e-2)
    by_name = {g["name"]: g for g in groups}
    assert by_name["unary"]["lr"] == 1e-4 and by_name["crf"]["lr"] == 1e-2
    assert by_name["crf"]["weight_decay"] == 0.0
    assert len(by_name["crf"]["params"]) == len(list(crf.parameters())) == 4
    optimizer = torch.optim.SGD(groups, lr=0.1)
    unary = cnn(torch.rand(1, 3, 8, 8) * 255)
    out = crf(unary, torch.rand(1, 3, 8, 8) * 255)
    out.sum().backward()
    before = crf.compat.detach().clone()
    optimizer.step()
    assert not torch.equal(before, crf.compat)


def test_schedule_bad_arguments():
    cnn, crf = small_cnn(), DenseCRF(4)
    with pytest.raises(ValueError, match="stage"):
        two_stage_param_groups(cnn, crf, 3)
    with pytest.raises(ValueError, match="top"):
        two_stage_param_groups(cnn, crf, 1, top=("head.",))
    with pytest.raises(ValueError, match="lr_crf"):
        two_stage_param_groups(cnn, crf, 2, lr_crf=0)


def test_plot_compatibility_writes_a_png(tmp_path):
    mu = -torch.eye(3) + 0.2 * torch.rand(3, 3)
    path = plot_compatibility(mu, ["background", "person", "bike"], tmp_path / "mu.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError, match="class_names"):
        plot_compatibility(mu, ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="matrix"):
        plot_compatibility(torch.ones(2, 3), ["a", "b"], tmp_path / "x.png")
