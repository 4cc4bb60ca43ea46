"""Mean-field inference with general (asymmetric, non-Gaussian) pairwise potentials (§6.1).

Scores follow the paper's sign convention: higher is more likely, U = -z_p and V = -z_pq.
The parallel update of every node is

    Q_p(l) ∝ exp( z_p(l) + Σ_{(p,q)∈E} Σ_l' z_pq(l, l') Q_q(l')
                        + Σ_{(q,p)∈E} Σ_l' z_qp(l', l) Q_q(l') ),

i.e. an edge sends a message to both of its ends: to p through the rows of its table and to q
through its columns. Inference starts from softmax(z_p). Several unary types (an ensemble)
and several pairwise types (one per spatial relation) enter by summing their scores. The
tables are a ``deepcrf.crf.MessagePassing`` (``GraphMessages``) run by the library's one
mean-field loop, ``deepcrf.crf.mean_field``. All operations are plain differentiable torch
ops on the inputs' device (float32, or float64 when an input is float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepcrf.crf import mean_field as _mean_field

from .features import _check_edges

TensorOrList = torch.Tensor | Sequence[torch.Tensor]


def mean_field(
    unary: TensorOrList,
    edges: TensorOrList,
    pairwise: TensorOrList,
    iterations: int = 3,
) -> torch.Tensor:
    """Approximate marginals (N, K) of the CRF by ``iterations`` parallel mean-field updates.

    Args:
        unary: unary scores z_p (N, K), or a list of them (ensemble, scores summed).
        edges: (E, 2) LongTensor of (p, q) node indices, or a list, one per pairwise type.
        pairwise: scores z_pq(y_p, y_q) as (E, K, K), or a list matching ``edges``.
        iterations: number of parallel updates after the softmax(z_p) initialisation.
    """
    z = combine_unaries(unary)
    types = pairwise_types(edges, pairwise, z.shape[0], z.shape[1])
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    dtype = z.dtype
    for _, table in types:
        dtype = torch.promote_types(dtype, table.dtype)
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    z = z.to(dtype)
    return _mean_field(z, GraphMessages(types, dtype), iterations)


class GraphMessages:
    """General pairwise tables on graph edges as a ``deepcrf.crf.MessagePassing``."""

    def __init__(
        self,
        types: Sequence[tuple[torch.Tensor, torch.Tensor]],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.types = [(edges, table.to(dtype)) for edges, table in types]

    def add_message(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``logits`` (N, K) plus the expected pairwise score every node receives."""
        return logits + pairwise_messages(q, self.types)


def pairwise_messages(
    q: torch.Tensor, types: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Σ over edges of the expected pairwise score each node receives, (N, K)."""
    message = torch.zeros_like(q)
    for edges, table in types:
        if edges.shape[0] == 0:
            continue
        p, r = edges[:, 0], edges[:, 1]
        to_p = torch.bmm(table, q[r].unsqueeze(2)).squeeze(2)  # Σ_l' z_pq(l, l') Q_q(l')
        to_q = torch.bmm(q[p].unsqueeze(1), table).squeeze(1)  # Σ_l' z_pq(l', l) Q_p(l')
        message = message.index_add(0, p, to_p).index_add(0, r, to_q)
    return message


def combine_unaries(unary: TensorOrList) -> torch.Tensor:
    """The sum of one or several (N, K) unary score tensors, validated."""
    unaries = [unary] if isinstance(unary, torch.Tensor) else list(unary)
    if not unaries:
        raise ValueError("unary must be a (N, K) tensor or a non-empty list of them")
    for u in unaries:
        if not isinstance(u, torch.Tensor) or u.dim() != 2 or u.shape[1] < 1:
            shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"unary must be (N, K) scores, got {shape}")
        if not u.is_floating_point():
            raise TypeError(f"unary must be floating point, got {u.dtype}")
        if u.shape != unaries[0].shape:
            raise ValueError(
                f"all unaries of an ensemble must share one shape, got "
                f"{tuple(unaries[0].shape)} and {tuple(u.shape)}"
            )
    total = unaries[0]
    for u in unaries[1:]:
        total = total + u
    return total


def pairwise_types(
    edges: TensorOrList, pairwise: TensorOrList, num_nodes: int, num_classes: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validated list of (edges (E, 2) long, table (E, K, K)) pairs, one per pairwise type.

    One edge tensor with a list of tables means the same edges for every type; a table may
    also be given flat as (E, K*K) with entry ``y_p * K + y_q``.
    """
    if not isinstance(edges, torch.Tensor) and isinstance(pairwise, torch.Tensor):
        raise TypeError("pairwise must be a list of tables when edges is a list of edge sets")
    table_list = [pairwise] if isinstance(pairwise, torch.Tensor) else list(pairwise)
    if isinstance(edges, torch.Tensor):
        edge_list = [edges] * len(table_list)
    else:
        edge_list = list(edges)
    if len(edge_list) != len(table_list):
        raise ValueError(
            f"edges and pairwise must list the same number of types, "
            f"got {len(edge_list)} and {len(table_list)}"
        )
    k = num_classes
    types = []
    for e, t in zip(edge_list, table_list, strict=True):
        _check_edges(e, num_nodes)
        if isinstance(t, torch.Tensor) and t.shape == (e.shape[0], k * k):
            t = t.view(-1, k, k)
        if not isinstance(t, torch.Tensor) or t.shape != (e.shape[0], k, k):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"pairwise must be (E, K, K) = ({e.shape[0]}, {k}, {k}) "
                f"scores matching edges and unary, got {shape}"
            )
        if not t.is_floating_point():
            raise TypeError(f"pairwise must be floating point, got {t.dtype}")
        types.append((e.long(), t))
    return types
