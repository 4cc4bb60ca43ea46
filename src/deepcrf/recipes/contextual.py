"""Training the contextual deep CRF (Lin et al. 2016) in the one training loop.

The contextual model is trained with the piecewise objective and the asynchronous update of
``deepcrf.contextual.asynchronous_step``: each optimiser step runs the FeatMap-Nets once, the
Pairwise-Nets take sub-iterations of ``optim.edges_per_update`` edges (each its own SGD
update) while the FeatMap-Net gradients accumulate, then the FeatMap-Nets and Unary-Nets
step once. :class:`ContextualOptimizer` holds the two optimisers as one object (one set of
parameter groups for the schedule, one state dict for checkpoints). Under ``torchrun`` the
model is not wrapped in DistributedDataParallel: gradients are averaged over the processes
before every update (the number of sub-iterations depends only on the graph, so it is equal
on every process); batch-norm statistics are broadcast from rank 0 before every step, as DDP
does with its buffers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..contextual import ContextualCRF, asynchronous_step
from .config import Config, OptimConfig
from .distributed import Dist, all_reduce_sum
from .optim import param_groups

__all__ = [
    "ContextualOptimizer",
    "broadcast_parameters",
    "build_contextual_optimizer",
    "check_contextual",
    "refine_step",
    "train_step",
]


class ContextualOptimizer:
    """The FeatMap-/Unary-Net optimiser and the Pairwise-Net one as one optimiser-like object.

    ``param_groups`` lists both optimisers' groups (the schedule sets each group's lr);
    ``state_dict`` / ``load_state_dict`` cover both; ``step`` is not used by the training loop
    (``train_step`` steps them in the asynchronous order).
    """

    def __init__(self, main: torch.optim.Optimizer, pairwise: torch.optim.Optimizer) -> None:
        self.main, self.pairwise = main, pairwise

    @property
    def param_groups(self) -> list[dict]:
        return self.main.param_groups + self.pairwise.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.main.zero_grad(set_to_none=set_to_none)
        self.pairwise.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "pairwise": self.pairwise.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        self.pairwise.load_state_dict(state["pairwise"])


def _optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def _split_groups(groups: list[dict], keep: set[int], inside: bool) -> list[dict]:
    out = []
    for g in groups:
        params = [p for p in g["params"] if (id(p) in keep) == inside]
        if params:
            out.append({**g, "params": params})
    return out


def build_contextual_optimizer(model: ContextualCRF, cfg: OptimConfig) -> ContextualOptimizer:
    """The two optimisers over ``param_groups(model, cfg)`` (Caffe's multipliers: the paper's
    lr 1e-4 for the VGG layers and 1e-3 for the new ones is ``lr=1e-4`` with the new layers
    under ``optim.head`` and ``head_lr_mult=10``)."""
    if cfg.groups != "caffe":
        raise ValueError("optim.groups: the contextual recipe uses caffe groups")
    if model.refine_net is not None:  # second stage: the refinement network alone
        refine = {id(p) for p in model.refine_net.parameters()}
        for p in model.parameters():
            if id(p) not in refine:
                p.requires_grad_(False)
    if not model.relations:  # unary only: the recipe's head list names absent Pairwise-Nets
        cfg = dataclasses.replace(
            cfg, head=[h for h in cfg.head if not h.startswith("pairwise_nets")]
        )
    groups = param_groups(model, cfg)
    pair = {id(p) for p in model.pairwise_parameters()}
    main_groups = _split_groups(groups, pair, inside=False)
    if not main_groups:
        raise ValueError("optim.freeze: every FeatMap-/Unary-Net parameter is frozen")
    pair_groups = _split_groups(groups, pair, inside=True)
    if not pair_groups:  # unary only: an empty optimiser keeps the checkpoint layout
        dummy = nn.Parameter(torch.zeros(0), requires_grad=False)
        pair_groups = [{"params": [dummy], "lr": cfg.lr, "lr_mult": 1.0, "name": "none"}]
    return ContextualOptimizer(_optimizer(main_groups, cfg), _optimizer(pair_groups, cfg))


def check_contextual(config: Config, model: ContextualCRF) -> None:
    """Settings the contextual recipe cannot run with, each named by its key."""
    if model.refine_net is not None and not config.init:
        raise ValueError(
            "model.options.refine_net: the refinement network is the second stage; give the "
            "trained contextual run as init= (deepcrf train contextual ... --set init=RUN)"
        )
    if model.num_classes < 2:
        raise ValueError(
            f"model.num_classes: the contextual CRF needs at least 2 classes, the dataset "
            f"defines {model.num_classes} (pairwise potentials over one label carry nothing)"
        )
    if config.train.amp == "fp16":
        raise ValueError("train.amp: fp16 is not supported by the contextual model (use bf16)")
    if config.optim.accumulate != 1:
        raise ValueError("optim.accumulate: the asynchronous update takes one batch per step")
    if config.optim.clip_grad_norm:
        raise ValueError("optim.clip_grad_norm: not supported by the asynchronous update")
    stride = model.output_stride or 1
    side = round(config.data.crop_size * max(_scales(model))) // stride
    if model.relations and side < 2:
        raise ValueError(
            f"data.crop_size: {config.data.crop_size} px crops give a {side} x {side} feature "
            f"map (stride {stride}), smaller than the range box; use crops of at least "
            f"{2 * stride} px"
        )


def broadcast_parameters(model: nn.Module, ctx: Dist, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers on every process (what DDP does when it wraps); with
    ``buffers_only`` its buffers alone (batch-norm statistics: what DDP does before every
    forward pass)."""
    if not ctx.active:
        return
    import torch.distributed as dist

    tensors = [*model.buffers()] if buffers_only else [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def refine_step(
    model: ContextualCRF,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    reduce_grads: Callable[[list[torch.Tensor]], None] | None = None,
) -> float:
    """One step of the second stage: the refinement network on the frozen CRF's marginals
    (its FeatMap-, Unary- and Pairwise-Nets stay in eval mode: batch-norm statistics fixed)."""
    for part in (model.featmaps, model.unary_nets, model.pairwise_nets):
        part.eval()
    optimizer.zero_grad(set_to_none=True)
    loss = model.refine_loss(images, labels)
    loss.backward()
    if reduce_grads is not None:
        reduce_grads(list(model.refine_net.parameters()))
    optimizer.step()
    return float(loss.item())


def _scales(model: ContextualCRF) -> tuple[float, ...]:
    return tuple(getattr(model.featmaps[0], "scales", (1.0,)))


def train_step(
    model: ContextualCRF, batch: dict, optimizer: ContextualOptimizer, config: Config, ctx: Dist
) -> float:
    """One asynchronous optimiser step on ``batch``; returns the piecewise loss seen. A model
    with a refinement network trains that network alone (the second stage, ``refine_step``)."""
    images = batch["image"].to(ctx.device, non_blocking=True)
    labels = batch["label"].to(ctx.device)

    def reduce(params: list[torch.Tensor]) -> None:
        for p in params:
            if p.grad is not None:
                all_reduce_sum(p.grad, ctx).div_(ctx.world)

    broadcast_parameters(model, ctx, buffers_only=True)
    if model.refine_net is not None:
        seen = refine_step(model, images, labels, optimizer.main, reduce if ctx.active else None)
        loss = torch.tensor([seen], dtype=torch.float32, device=ctx.device)
        return float(all_reduce_sum(loss, ctx).item()) / ctx.world

    result = asynchronous_step(
        model,
        images,
        labels,
        optimizer.main,
        optimizer.pairwise,
        edges_per_update=config.optim.edges_per_update,
        reduce_grads=reduce if ctx.active else None,
    )
    loss = torch.tensor([result.loss], dtype=torch.float32, device=ctx.device)
    return float(all_reduce_sum(loss, ctx).item()) / ctx.world
