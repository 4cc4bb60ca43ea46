"""Edge features and Pairwise-Net scores, computed in chunks of edges (Lin et al. §3.2, Fig. 5).

The feature of edge (p, q) is the ordered concatenation ``[f_p, f_q]`` of the two node
features, so the Pairwise-Net sees which node is first and can be asymmetric. A 35 x 35 map
has ~1,200 nodes x 24 edges per relation: materialising every (E, 2C) edge feature and every
hidden activation at once is what runs out of memory, so the net is applied ``chunk_size``
edges at a time. Under autograd each chunk is recomputed in the backward pass
(activation checkpointing), so only the (E, K, K) scores are kept alive.

Split first layer: a Pairwise-Net whose first layer is linear on ``[f_p, f_q]`` computes
``W [f_p; f_q] + b = (W_p f_p + b) + W_q f_q``. A net that offers this split
(:class:`SplitPairwiseNet`: ``project_nodes`` and ``score_edges``) has both products computed
once per node, before edges are formed; an edge then costs one two-row gather-and-sum (an
``embedding_bag`` over the (2N, hidden) table of both products) and the second layer,
independent of the feature width C (the paper's C is 4608, so the edge cost drops by about
2C / K^2). Chunking and recomputation apply to the per-edge part.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@runtime_checkable
class SplitPairwiseNet(Protocol):
    """A Pairwise-Net whose first layer is split into per-node products."""

    def project_nodes(self, node_features: torch.Tensor) -> torch.Tensor:
        """(N, 2, hidden): ``[W_p f + b, W_q f]`` for node features (N, C), contiguous."""

    def score_edges(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (n, K*K) from the first layer's pre-activations (n, hidden), a fresh
        tensor that the net may overwrite (e.g. an in-place ReLU)."""


def edge_features(node_features: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Ordered concatenation ``[f_p, f_q]`` for each edge: (N, C), (E, 2) -> (E, 2C)."""
    if node_features.dim() != 2:
        raise ValueError(f"node_features must be (N, C), got shape {tuple(node_features.shape)}")
    _check_edges(edges, node_features.shape[0])
    return torch.cat([node_features[edges[:, 0]], node_features[edges[:, 1]]], dim=1)


def edge_chunks(num_edges: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(num_edges)``, ``chunk_size`` edges each."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for start in range(0, num_edges, chunk_size):
        yield slice(start, min(start + chunk_size, num_edges))


def pairwise_scores(
    node_features: torch.Tensor,
    edges: torch.Tensor,
    pairwise_net: nn.Module,
    num_classes: int,
    chunk_size: int = 8192,
    recompute: bool = True,
    split: bool | None = None,
) -> torch.Tensor:
    """Pairwise-Net scores z_pq(y_p, y_q) for every edge, as (E, K, K), chunk by chunk.

    ``pairwise_net`` maps (n, 2C) edge features to (n, K*K) scores laid out row-major, i.e.
    entry ``y_p * K + y_q``. With ``recompute`` (and autograd on, and more than one chunk) each
    chunk's activations are recomputed in the backward pass instead of stored; turn it off for
    nets whose forward has side effects (batch-norm running statistics would be updated twice).
    ``split`` (default: whenever the net is a :class:`SplitPairwiseNet`) computes the first
    layer once per node; ``split=False`` forms every (E, 2C) edge feature (the reference path).
    """
    _check_edges(edges, node_features.shape[0])
    k = num_classes
    track = torch.is_grad_enabled() and (
        node_features.requires_grad or any(p.requires_grad for p in pairwise_net.parameters())
    )
    can_split = isinstance(pairwise_net, SplitPairwiseNet)
    if split is None:
        split = can_split
    elif split and not can_split:
        raise TypeError(
            "split=True needs a Pairwise-Net with project_nodes and score_edges "
            f"(deepcrf.models PairwiseNet), got {type(pairwise_net).__name__}"
        )
    inputs: tuple[torch.Tensor, ...] = (node_features,)
    chunk_fn = _chunk_scores
    if split:
        if 2 * edges.shape[0] < node_features.shape[0]:  # a few edges: project their nodes only
            used, edges = torch.unique(edges, return_inverse=True)
            node_features = node_features[used]
        projected = pairwise_net.project_nodes(node_features)
        n = node_features.shape[0]
        if projected.dim() != 3 or projected.shape[:2] != (n, 2):
            raise ValueError(
                f"project_nodes must return (N, 2, hidden) = ({n}, 2, hidden), "
                f"got {tuple(projected.shape)}"
            )
        inputs = (projected.contiguous().view(2 * n, -1),)
        chunk_fn = _split_chunk_scores
    grad_inputs = any(t.requires_grad for t in inputs)
    chunks = list(edge_chunks(edges.shape[0], chunk_size))
    # one chunk: its activations are all that the recomputation would hold at once anyway
    recompute = recompute and len(chunks) > 1
    parts = []
    out = None
    for part in chunks:
        try:
            if recompute and track and grad_inputs:
                scores = checkpoint(
                    chunk_fn, *inputs, edges[part], pairwise_net, use_reentrant=False
                )
            else:
                scores = chunk_fn(*inputs, edges[part], pairwise_net)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if "memory" not in str(exc).lower():
                raise
            raise MemoryError(
                f"out of memory evaluating the Pairwise-Net on {chunk_size} edges at once: "
                "lower chunk_size (model.options.chunk_size), or the batch / crop size"
            ) from exc
        if scores.dim() != 2 or scores.shape[1] != k * k:
            raise ValueError(
                f"pairwise_net must return (n, num_classes**2) = (n, {k * k}) scores, "
                f"got shape {tuple(scores.shape)}"
            )
        if track:
            parts.append(scores.view(-1, k, k))
            continue
        if out is None:  # no autograd: write chunks in place, no second copy for a cat
            out = scores.new_empty((edges.shape[0], k, k))
        out[part] = scores.view(-1, k, k)
    if track:
        return torch.cat(parts, dim=0) if parts else node_features.new_zeros((0, k, k))
    return out if out is not None else node_features.new_zeros((0, k, k))


def _chunk_scores(
    node_features: torch.Tensor, edges: torch.Tensor, pairwise_net: nn.Module
) -> torch.Tensor:
    return pairwise_net(edge_features(node_features, edges))


def _split_chunk_scores(
    table: torch.Tensor, edges: torch.Tensor, pairwise_net: nn.Module
) -> torch.Tensor:
    # row 2i of the table is node i's W_p f_i + b, row 2i + 1 its W_q f_i: one gather-and-sum
    pairs = torch.stack([2 * edges[:, 0], 2 * edges[:, 1] + 1], dim=1)
    return pairwise_net.score_edges(F.embedding_bag(pairs, table, mode="sum"))


def _check_edges(edges: torch.Tensor, num_nodes: int) -> None:
    if not isinstance(edges, torch.Tensor) or edges.dim() != 2 or edges.shape[1] != 2:
        shape = tuple(edges.shape) if isinstance(edges, torch.Tensor) else type(edges).__name__
        raise ValueError(f"edges must be a (E, 2) tensor of node indices, got {shape}")
    if edges.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edges must hold int64 node indices, got {edges.dtype}")
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= num_nodes):
        raise ValueError(
            f"edges index nodes in [{int(edges.min())}, {int(edges.max())}], "
            f"but there are {num_nodes} nodes"
        )
