"""Piecewise training objective of Lin et al. (eq. 11-14) and ground truth on the CRF grid.

Piecewise training replaces the CRF likelihood by a product of independent local ones: a
softmax over the K classes per node and unary type (eq. 11) and a softmax over the K*K label
pairs per edge and pairwise type (eq. 12). Its negative log-likelihood (eq. 13-14) needs no
inference, so SGD costs the same as for a plain classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inference import TensorOrList, pairwise_types

REDUCTIONS = ("sum", "mean")


def piecewise_nll(
    unary: TensorOrList,
    edges: TensorOrList,
    pairwise: TensorOrList,
    labels: torch.Tensor,
    ignore_index: int = 255,
    reduction: str = "sum",
) -> torch.Tensor:
    """Negative piecewise log-likelihood of ``labels`` (eq. 14 without the weight decay).

    Args:
        unary: scores z_p (N, K), or a list of unary types (each its own likelihood).
        edges: (E, 2) LongTensor of (p, q), or a list, one per pairwise type.
        pairwise: scores z_pq(y_p, y_q) (E, K, K), or a list matching ``edges``.
        labels: (N,) class indices; nodes labelled ``ignore_index`` are skipped, and so are
            the edges touching them.
        reduction: ``"sum"`` is eq. 14 as written: the sum over every unary type and node and
            every pairwise type and edge. ``"mean"`` averages each potential type's terms over
            its own nodes / edges and sums these averages over the types, so that the ~24x
            more edge terms do not drown the unary term (a type with no term counts 0).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    unaries = [unary] if isinstance(unary, torch.Tensor) else list(unary)
    if not unaries:
        raise ValueError("unary must be a (N, K) tensor or a non-empty list of them")
    for u in unaries:
        if not isinstance(u, torch.Tensor) or u.dim() != 2 or u.shape != unaries[0].shape:
            raise ValueError("unary must be (N, K) scores (all unary types of one shape)")
    n, k = unaries[0].shape
    labels = check_labels(labels, n, k, ignore_index)
    valid = labels != ignore_index
    terms = [unary_nll_terms(u, labels, valid) for u in unaries]
    for e, table in pairwise_types(edges, pairwise, n, k):
        terms.append(pairwise_nll_terms(e, table, labels, valid))
    if reduction == "sum":
        return sum((t.sum() for t in terms[1:]), terms[0].sum())
    return sum((_mean(t) for t in terms[1:]), _mean(terms[0]))


def unary_nll_terms(unary: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-log P_U(y_p) of each valid node (eq. 11), a 1-D tensor."""
    log_p = F.log_softmax(unary[valid], dim=1)
    return -log_p.gather(1, labels[valid].unsqueeze(1)).squeeze(1)


def pairwise_nll_terms(
    edges: torch.Tensor, pairwise: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """-log P_V(y_p, y_q) of each edge whose two ends are valid (eq. 12), a 1-D tensor."""
    k = pairwise.shape[-1]
    keep = valid[edges[:, 0]] & valid[edges[:, 1]]
    kept = edges[keep]
    log_p = F.log_softmax(pairwise[keep].reshape(-1, k * k), dim=1)
    target = labels[kept[:, 0]] * k + labels[kept[:, 1]]
    return -log_p.gather(1, target.unsqueeze(1)).squeeze(1)


def check_labels(labels: torch.Tensor, num_nodes: int, num_classes: int, ignore_index: int):
    """Labels as a validated (N,) long tensor: class indices or ``ignore_index``."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex():
        raise TypeError("labels must be an integer tensor of class indices")
    labels = labels.reshape(-1).long()
    if labels.shape[0] != num_nodes:
        raise ValueError(
            f"labels must hold one label per node ({num_nodes}), got {labels.shape[0]}"
        )
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"labels must be in [0, {num_classes}) or ignore_index={ignore_index}, "
            f"got {int(labels[bad][0])}"
        )
    return labels


def _mean(terms: torch.Tensor) -> torch.Tensor:
    return terms.sum() / max(terms.numel(), 1)
