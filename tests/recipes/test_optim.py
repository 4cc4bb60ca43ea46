"""Per-group learning rates and weight decay (Caffe's conventions), schedules."""

from __future__ import annotations

import pytest

from deepcrf.models import build
from deepcrf.recipes.config import OptimConfig, ScheduleConfig
from deepcrf.recipes.optim import build_optimizer, lr_factor, param_groups


def _groups(model, **changes):
    cfg = OptimConfig(**changes)
    return {g["name"]: g for g in param_groups(model, cfg)}, cfg


def test_caffe_multipliers_on_deeplab():
    model = build("deeplab_largefov", 5, width=1 / 16)
    groups, _cfg = _groups(model, lr=0.001, weight_decay=5e-4, head=["fc8"])
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(model.named_parameters())
    assert ids["head_weight"] == {id(named["fc8.weight"])}
    assert ids["head_bias"] == {id(named["fc8.bias"])}
    assert id(named["fc6.bias"]) in ids["bias"] and id(named["fc6.weight"]) in ids["weight"]
    assert groups["weight"]["lr"] == pytest.approx(0.001)
    assert groups["bias"]["lr"] == pytest.approx(0.002)
    assert groups["head_weight"]["lr"] == pytest.approx(0.01)
    assert groups["head_bias"]["lr"] == pytest.approx(0.02)
    assert groups["weight"]["weight_decay"] == pytest.approx(5e-4)
    assert groups["bias"]["weight_decay"] == 0.0 and groups["head_bias"]["weight_decay"] == 0.0
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_crf_parameters_get_their_own_rates_without_decay():
    model = build("crfasrnn", 3, width=1 / 16)
    groups, _ = _groups(model, lr=1e-4, crf_lr_mult=100.0, compat_lr_mult=10.0)
    assert {id(p) for p in groups["crf"]["params"]} == {id(model.crf.kernel_weights)}
    assert {id(p) for p in groups["crf_compat"]["params"]} == {id(model.crf.compat)}
    assert groups["crf"]["lr"] == pytest.approx(1e-2)
    assert groups["crf_compat"]["lr"] == pytest.approx(1e-3)
    assert groups["crf"]["weight_decay"] == 0.0 == groups["crf_compat"]["weight_decay"]


def test_two_stage_groups_and_freeze():
    model = build("joint_deeplab_crf", 3, width=1 / 16)
    groups, _ = _groups(model, lr=1e-4, groups="two_stage", crf_lr_mult=10.0)
    assert set(groups) == {"unary", "crf"}
    assert groups["crf"]["lr"] == pytest.approx(1e-3) and groups["crf"]["lr_mult"] == 10.0
    crf_ids = {id(p) for p in model.crf.parameters()}
    assert {id(p) for p in groups["crf"]["params"]} == crf_ids

    fcn = build("fcn8s", 3, width=1 / 16)
    groups, _ = _groups(fcn, freeze=["upscore8"], head=["score_"])
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert id(fcn.upscore8.weight) not in trained and not fcn.upscore8.weight.requires_grad
    with pytest.raises(ValueError, match=r"optim.head: no parameter name starts with 'fc9'"):
        param_groups(fcn, OptimConfig(head=["fc9"]))


def test_optimizer_steps_use_the_group_rates():
    model = build("deeplab_largefov", 3, width=1 / 16)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.5, momentum=0.0,
                                             weight_decay=0.0, head=["fc8"]))  # fmt: skip
    for p in model.parameters():
        p.grad = p.detach().new_ones(p.shape)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    after = dict(model.named_parameters())
    assert (before["fc8.bias"] - after["fc8.bias"]).max().item() == pytest.approx(10.0)
    assert (before["fc8.weight"] - after["fc8.weight"]).max().item() == pytest.approx(5.0)
    assert (before["fc7.bias"] - after["fc7.bias"]).max().item() == pytest.approx(1.0)
    assert (before["fc7.weight"] - after["fc7.weight"]).max().item() == pytest.approx(0.5)


def test_schedules_and_warmup():
    step = ScheduleConfig(name="step", step_size=10, gamma=0.1)
    assert [lr_factor(s, 100, step) for s in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.1, 0.01])
    poly = ScheduleConfig(name="poly", power=0.9)
    assert lr_factor(50, 100, poly) == pytest.approx(0.5**0.9)
    warm = ScheduleConfig(name="constant", warmup_steps=4, warmup_factor=0.2)
    assert [lr_factor(s, 100, warm) for s in (0, 2, 4)] == pytest.approx([0.2, 0.6, 1.0])
