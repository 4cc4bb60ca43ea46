"""Generated scenes where context decides the class: the pairwise term must lower the error.

Every scene is a 12 x 12 grid of 2 x 2-pixel cells on one background, "water" (blue) or
"road" (grey), with one or two red squares of 2-3 cells. A red square is a "boat" (class 1)
on water and a "car" (class 2) on road: its own pixels are identical in both cases, so a
model that looks at one cell at a time (the FeatMap-Net here sees exactly one cell) cannot
do better than guessing between boat and car. The "surrounding" pairwise potential sees
(object, water) or (object, road) pairs and resolves it through mean field.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.contextual import ContextualCRF
from deepcrf.data.context_cells import CELL_CLASSES, context_cell_scenes

CELL, K = 2, len(CELL_CLASSES)  # cells of 2x2 pixels; 0 background, 1 boat, 2 car


class CellFeatures(nn.Module):
    """A FeatMap-Net that sees one cell only: mean colour of the cell -> 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(F.avg_pool2d(x, CELL)))


def build(relations: tuple[str, ...]) -> ContextualCRF:
    torch.manual_seed(0)
    featmaps = [CellFeatures() for _ in range(1 + len(relations))]
    unary = nn.Conv2d(8, K, 1)
    pairwise = [
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, K * K)) for _ in relations
    ]
    return ContextualCRF(featmaps, unary, pairwise, K, relations, box=0.4, grid=5)


def train_and_test(relations, train, test, steps=150) -> tuple[float, float]:
    """Piecewise training with Adam; (error on object cells, error on all cells) of the test set."""
    model = build(relations)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, train[0].shape[0], (8,), generator=g)
        opt.zero_grad()
        model.loss(train[0][idx], train[1][idx]).backward()
        opt.step()
    with torch.no_grad():
        pred = model.marginals(test[0]).argmax(1)
    wrong = pred != test[1]
    objects = test[1] > 0
    return wrong[objects].float().mean().item(), wrong.float().mean().item()


def test_pairwise_context_lowers_the_error_of_unary_only_prediction():
    start = time.perf_counter()
    train, test = context_cell_scenes(64, seed=0), context_cell_scenes(48, seed=1)
    unary_obj, unary_all = train_and_test((), train, test)
    pair_obj, pair_all = train_and_test(("surrounding",), train, test)
    elapsed = time.perf_counter() - start
    print(
        f"\nobject-cell error: unary-only {unary_obj:.3f}, unary+pairwise {pair_obj:.3f}; "
        f"all cells: {unary_all:.4f} -> {pair_all:.4f} ({elapsed:.1f} s)"
    )
    assert unary_obj > 0.25  # boat vs car is a coin flip for the cell alone
    assert pair_obj < 0.1 and pair_obj < unary_obj / 3
    assert pair_all < unary_all
