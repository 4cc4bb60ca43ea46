"""Optimiser parameter groups with Caffe's conventions, optimisers and lr schedules.

Groups (``optim.groups = "caffe"``), each with ``lr = optim.lr * lr_mult``:

==============  ===========================  =================================
group           parameters                   lr_mult / weight decay
==============  ===========================  =================================
weight          other weights                1 / weight_decay
bias            other biases                 bias_lr_mult (2) / x bias_decay_mult (0)
head_weight     weights under ``optim.head``  head_lr_mult (10) / weight_decay
head_bias       biases under ``optim.head``   head_lr_mult * bias_lr_mult (20) / 0
crf             CRF kernel weights and        crf_lr_mult / 0
                bandwidths (``crf.*``)
crf_compat      CRF compatibility             compat_lr_mult / 0
==============  ===========================  =================================

``optim.groups = "two_stage"`` uses ``deepcrf.nn.two_stage_param_groups`` (stage 2: the CNN at
``lr`` and the CRF at ``lr * crf_lr_mult``). Parameters under ``optim.freeze`` are not trained.
Schedules (``step``: x gamma every ``step_size`` steps; ``poly``: (1 - s/steps)^power;
``constant``) are multiplied by a linear warm-up from ``warmup_factor`` over ``warmup_steps``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import nn

from ..nn import two_stage_param_groups
from .config import OptimConfig, ScheduleConfig

__all__ = ["build_optimizer", "lr_factor", "param_groups"]


def _matches(name: str, prefix: str) -> bool:
    """``name`` starts with ``prefix``, which may hold ``*`` wildcards (``featmaps.*.block6``)."""
    return name.startswith(prefix) or ("*" in prefix and fnmatchcase(name, prefix + "*"))


def _check_prefixes(model: nn.Module, prefixes: list, key: str) -> None:
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(_matches(n, prefix) for n in names):
            raise ValueError(
                f"{key}: no parameter name starts with {prefix!r}; top-level modules: "
                + ", ".join(sorted({n.split(".")[0] for n in names}))
            )


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Named parameter groups (empty ones dropped); each carries its ``lr_mult``."""
    _check_prefixes(model, cfg.head, "optim.head")
    _check_prefixes(model, cfg.freeze, "optim.freeze")
    for name, p in model.named_parameters():
        if any(_matches(name, f) for f in cfg.freeze):
            p.requires_grad_(False)
    if cfg.groups == "two_stage":
        unary_attr = getattr(model, "unary_attr", None)
        if unary_attr is None or not hasattr(model, "crf"):
            raise ValueError("optim.groups: two_stage needs a model with a CNN and a crf")
        groups = two_stage_param_groups(
            getattr(model, unary_attr),
            model.crf,
            stage=2,
            lr_joint=cfg.lr,
            lr_crf=cfg.lr * cfg.crf_lr_mult,
            weight_decay=cfg.weight_decay,
        )
        for g in groups:
            g["lr_mult"] = g["lr"] / cfg.lr
        return groups
    wd = cfg.weight_decay
    spec = {
        "weight": (1.0, wd),
        "bias": (cfg.bias_lr_mult, wd * cfg.bias_decay_mult),
        "head_weight": (cfg.head_lr_mult, wd),
        "head_bias": (cfg.head_lr_mult * cfg.bias_lr_mult, wd * cfg.bias_decay_mult),
        "crf": (cfg.crf_lr_mult, 0.0),
        "crf_compat": (cfg.compat_lr_mult, 0.0),
    }
    members: dict[str, list] = {k: [] for k in spec}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("crf."):
            members["crf_compat" if name == "crf.compat" else "crf"].append(p)
            continue
        head = any(_matches(name, h) for h in cfg.head)
        bias = name.endswith(".bias")
        members[("head_" if head else "") + ("bias" if bias else "weight")].append(p)
    return [
        {
            "name": k,
            "params": ps,
            "lr": cfg.lr * spec[k][0],
            "lr_mult": spec[k][0],
            "weight_decay": spec[k][1],
        }
        for k, ps in members.items()
        if ps
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam over ``param_groups(model, cfg)``."""
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("optim.freeze: every parameter is frozen; nothing to train")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    """Multiplier of every group's base lr at optimiser step ``step`` (0-based)."""
    if cfg.name == "step":
        factor = cfg.gamma ** (step // cfg.step_size)
    elif cfg.name == "poly":
        factor = max(0.0, 1.0 - step / total) ** cfg.power
    else:
        factor = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        factor *= cfg.warmup_factor * (1 - alpha) + alpha
    return factor
