"""Asynchronous gradient update of Lin et al. §8.2 as one training step.

A 35 x 35 map has ~30,000 edges per relation: one Pairwise-Net update over all of them is a
huge batch and holds every edge feature in memory. Instead, per SGD step:

1. the FeatMap-Nets run once; their outputs are detached into leaves that collect gradients;
2. the Unary-Net loss (mean over valid nodes; summed over an ensemble's nets) is
   back-propagated once;
3. for each relation the valid edges (both ends labelled) are shuffled and split into
   ``ceil(E / edges_per_update)`` subsets (E: the relation's edges in the batch's graph, so
   subsets hold up to ``edges_per_update`` edges, fewer where nodes are void); each subset's
   mean NLL is back-propagated and the Pairwise-Net is updated at once
   (``pairwise_optimizer.step()``) — later subsets see the updated net. The subset's
   gradient w.r.t. the node features is weighted by its share of the edges, so the leaves
   accumulate exactly the gradient of the relation's mean NLL (for a frozen net);
4. the accumulated feature gradients are back-propagated through the FeatMap-Nets once and
   ``optimizer`` (FeatMap-Nets + Unary-Net) steps once.

The objective is ``model.loss(..., reduction="mean")``: with a zero Pairwise-Net learning rate
the FeatMap-Net gradient of a step equals that loss's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .features import pairwise_scores
from .model import ContextualCRF, node_features
from .piecewise import pairwise_nll_terms, unary_nll_terms


@dataclass
class AsyncStepResult:
    """Losses seen during one asynchronous step (before each update)."""

    unary_loss: float
    pairwise_losses: dict[str, float] = field(default_factory=dict)  # edge-weighted mean NLL
    pairwise_updates: dict[str, int] = field(default_factory=dict)  # sub-iterations run

    @property
    def loss(self) -> float:
        return self.unary_loss + sum(self.pairwise_losses.values())


def asynchronous_step(
    model: ContextualCRF,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    pairwise_optimizer: torch.optim.Optimizer,
    edges_per_update: int = 2000,
    generator: torch.Generator | None = None,
    reduce_grads: Callable[[list[torch.Tensor]], None] | None = None,
) -> AsyncStepResult:
    """One SGD step with asynchronous Pairwise-Net updates (see the module docstring).

    ``optimizer`` must hold the FeatMap-Net and Unary-Net parameters and
    ``pairwise_optimizer`` the Pairwise-Net parameters (``model.pairwise_parameters()``).
    ``reduce_grads`` (data-parallel training) averages the gradients of the given parameters
    over the processes before every optimiser step; the number of Pairwise-Net
    sub-iterations depends only on the graph, so every process runs the same number.
    """
    _check_optimizers(model, optimizer, pairwise_optimizer)
    if isinstance(edges_per_update, bool) or not isinstance(edges_per_update, int):
        raise ValueError(f"edges_per_update must be a positive int, got {edges_per_update!r}")
    if edges_per_update < 1:
        raise ValueError(f"edges_per_update must be a positive int, got {edges_per_update!r}")
    optimizer.zero_grad(set_to_none=True)
    maps = model.feature_maps(images)
    leaves: dict[int, torch.Tensor] = {}
    for m in maps:
        leaves.setdefault(id(m), m.detach().requires_grad_(True))
    feats = [leaves[id(m)] for m in maps]
    b, _, h, w = feats[0].shape
    y = model.node_labels(labels, (h, w)).to(feats[0].device)
    valid = y != model.ignore_index

    unary_loss = sum(_mean(unary_nll_terms(u, y, valid)) for u in model.unary_scores(feats))
    unary_loss.backward()
    result = AsyncStepResult(unary_loss=unary_loss.item())

    edges = model.graph(h, w, b, feats[0].device)
    n_unary = len(model.unary_nets)
    for relation, f, e, net in zip(
        model.relations, feats[n_unary:], edges, model.pairwise_nets, strict=True
    ):
        parts = -(-e.shape[0] // edges_per_update)  # from the whole graph: equal on all ranks
        e = e[valid[e[:, 0]] & valid[e[:, 1]]]
        e = e[torch.randperm(e.shape[0], generator=generator).to(e.device)]
        total, seen, updates = e.shape[0], 0.0, 0
        # one (B*h*w, C) copy of the relation's node features per step: each subset adds
        # share * d(its mean NLL)/d(nodes) to nodes.grad, sent back into f after the loop
        nodes = node_features(f).detach().requires_grad_(f.requires_grad)
        params = [p for p in net.parameters() if p.requires_grad]
        for subset in torch.tensor_split(e, parts) if parts else ():
            share = subset.shape[0] / max(total, 1)
            pairwise_optimizer.zero_grad(set_to_none=True)
            if share > 0:
                scores = pairwise_scores(nodes, subset, net, model.num_classes, model.chunk_size)
                loss = _mean(pairwise_nll_terms(subset, scores, y, valid))
                # backward of share * loss: the feature gradient is weighted by the subset's
                # share; the Pairwise-Net's (a few thousand values, not B*h*w x C) is then
                # divided by it again, giving the subset's mean NLL gradient
                (loss * share).backward()
                for p in params:
                    if p.grad is not None:
                        p.grad.div_(share)
                seen += loss.item() * share
            else:  # no valid edge left in this subset: a zero update, same count on all ranks
                for p in params:
                    p.grad = torch.zeros_like(p)
            if reduce_grads is not None:
                reduce_grads(model.pairwise_parameters())
            pairwise_optimizer.step()
            updates += 1
        if nodes.grad is not None:
            node_features(f).backward(nodes.grad)
        result.pairwise_losses[relation] = seen
        result.pairwise_updates[relation] = updates

    grads = [(m, leaves[id(m)].grad) for m in {id(m): m for m in maps}.values()]
    grads = [(m, g) for m, g in grads if g is not None and m.requires_grad]
    if grads:
        torch.autograd.backward([m for m, _ in grads], [g for _, g in grads])
    if reduce_grads is not None:
        reduce_grads([p for g in optimizer.param_groups for p in g["params"]])
    optimizer.step()
    return result


def _mean(terms: torch.Tensor) -> torch.Tensor:
    return terms.sum() / max(terms.numel(), 1)


def _check_optimizers(
    model: ContextualCRF, optimizer: torch.optim.Optimizer, pairwise: torch.optim.Optimizer
) -> None:
    def ids(opt: torch.optim.Optimizer) -> set[int]:
        return {id(p) for group in opt.param_groups for p in group["params"]}

    pair_ids = {id(p) for p in model.pairwise_parameters()}
    if ids(optimizer) & pair_ids:
        raise ValueError(
            "optimizer must not hold Pairwise-Net parameters: they are updated by "
            "pairwise_optimizer in every sub-iteration"
        )
    other_ids = {id(p) for p in model.parameters()} - pair_ids
    if (pair_ids and not pair_ids <= ids(pairwise)) or ids(pairwise) & other_ids:
        raise ValueError(
            "pairwise_optimizer must hold model.pairwise_parameters() and no other parameter "
            "of the model (it zeroes their gradients in every sub-iteration)"
        )
