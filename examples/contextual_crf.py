"""The contextual deep CRF (Lin et al. 2016): learned pairwise potentials between regions.

Usage: python examples/contextual_crf.py [--steps N]

Generated scenes where only context decides the class: a red square is a "boat" on water and
a "car" on road, with identical pixels. A model that looks at one cell at a time cannot tell
them apart; a "surrounding" Pairwise-Net learns that boats sit on water and cars on road, and
mean field on the range-box graph resolves the ambiguity. Both models are trained with the
piecewise objective (no inference during training), as in the paper.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.contextual import ContextualCRF
from deepcrf.data.context_cells import CELL_CLASSES, context_cell_scenes

CELL, K = 2, len(CELL_CLASSES)  # cells of 2x2 pixels; 0 background, 1 boat, 2 car


class CellFeatures(nn.Module):
    """A FeatMap-Net that sees one cell only (its mean colour) -> 8 features per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(F.avg_pool2d(x, CELL)))


def build(relations: tuple[str, ...]) -> ContextualCRF:
    """FeatMap-Nets (one per potential), a Unary-Net and one Pairwise-Net per relation."""
    torch.manual_seed(0)
    featmaps = [CellFeatures() for _ in range(1 + len(relations))]
    unary = nn.Conv2d(8, K, 1)
    pairwise = [
        nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, K * K)) for _ in relations
    ]
    return ContextualCRF(featmaps, unary, pairwise, K, relations, box=0.4, grid=5)


def object_error(relations: tuple[str, ...], train, test, steps: int) -> float:
    """Train with the piecewise objective; the error on the test scenes' object cells."""
    model = build(relations)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, train[0].shape[0], (8,), generator=g)
        opt.zero_grad()
        model.loss(train[0][idx], train[1][idx]).backward()
        opt.step()
    with torch.no_grad():
        pred = model.marginals(test[0]).argmax(1)  # mean field on the coarse grid
    objects = test[1] > 0
    return float((pred != test[1])[objects].float().mean())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    args = parser.parse_args(argv[1:])
    train, test = context_cell_scenes(64, seed=0), context_cell_scenes(48, seed=1)
    unary_only = object_error((), train, test, args.steps)
    contextual = object_error(("surrounding",), train, test, args.steps)
    print(f"error on boat/car cells, unary only:            {unary_only:.1%}")
    print(f"error on boat/car cells, + surrounding context: {contextual:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
