"""Range-box CRF graph of Lin et al. (§2, §8.1) over the positions of a feature map.

Each node (one feature-map position, row-major index ``i * w + j``) is connected to the nodes
sampled by a regular ``grid x grid`` lattice spanning a square *range box*. The box side is
``box * min(h, w)`` nodes (the paper uses 0.4 of the short edge and a 5 x 5 grid).

Geometry and rounding (documented once, used everywhere):

* the grid spacing is the integer ``step = max(1, floor(side / (grid - 1)))``, so the grid
  points are distinct and never leave the box (for a 30 x 40 map: side 12, step 3, offsets
  -6, -3, 0, 3, 6). When the box is smaller than ``grid - 1`` nodes the spacing is 1 and the
  grid is then slightly larger than the box, so that a node keeps ``grid**2 - 1`` distinct
  neighbours wherever the map is large enough;
* ``"surrounding"``: the box is centred on the node, offsets ``step * (k - (grid - 1) // 2)``
  on both axes (``grid`` must be odd so that the centre falls on the node);
* ``"above_below"``: the bottom edge of the box is centred on the node, row offsets
  ``-step * k`` for ``k = grid - 1 .. 0`` (the rows above the node and the node's row),
  column offsets as for "surrounding". The neighbours therefore lie above the node or beside
  it in its row; none lies below;
* the node itself is excluded (``grid**2 - 1`` = 24 neighbours), neighbours outside the map are
  dropped.

Edge ``(p, q)`` always means "q is the sampled neighbour in p's box", so for "above_below" the
pair order encodes the spatial relation (q above or level with p) and the pairwise potential
``z_pq(y_p, y_q)`` can be asymmetric.
"""

from __future__ import annotations

import math

import torch

RELATIONS = ("surrounding", "above_below")


def grid_offsets(
    h: int, w: int, relation: str = "surrounding", box: float = 0.4, grid: int = 5
) -> torch.Tensor:
    """The (dy, dx) offsets of one node's neighbours, as a LongTensor (grid**2 - 1, 2)."""
    for name, value in (("h", h), ("w", w), ("grid", grid)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if grid < 2 or grid % 2 == 0:
        raise ValueError(f"grid must be an odd int >= 3 (the centre is the node), got {grid}")
    if not isinstance(box, (int, float)) or not math.isfinite(box) or box <= 0:
        raise ValueError(f"box must be a positive fraction of the short edge, got {box!r}")
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    side = box * min(h, w)
    step = max(1, math.floor(side / (grid - 1) + 1e-9))
    k = torch.arange(grid)
    cols = step * (k - (grid - 1) // 2)
    rows = cols if relation == "surrounding" else step * (k - (grid - 1))
    dy, dx = torch.meshgrid(rows, cols, indexing="ij")
    offsets = torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)
    keep = (offsets != 0).any(dim=1)
    return offsets[keep]


def range_box_edges(
    h: int, w: int, relation: str = "surrounding", box: float = 0.4, grid: int = 5
) -> torch.Tensor:
    """Edges (p, q) of the range-box graph of an ``h x w`` map as a LongTensor (E, 2).

    Node indices are row-major (``i * w + j``); edges are ordered by p, then by the grid
    position of q (row-major in the box). See the module docstring for the geometry.
    """
    offsets = grid_offsets(h, w, relation, box, grid)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    qi = ii.reshape(-1, 1) + offsets[:, 0]
    qj = jj.reshape(-1, 1) + offsets[:, 1]
    inside = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
    p = torch.arange(h * w).reshape(-1, 1).expand_as(qi)
    q = qi * w + qj
    return torch.stack([p[inside], q[inside]], dim=1)


def batch_edges(edges: torch.Tensor, num_nodes: int, batch_size: int) -> torch.Tensor:
    """Edges of ``batch_size`` disjoint copies of one graph, copy b's nodes offset by b*N."""
    offsets = torch.arange(batch_size, device=edges.device) * num_nodes
    return (edges.unsqueeze(0) + offsets.view(-1, 1, 1)).reshape(-1, 2)
