"""Tiny in-memory scenes where only the context decides the class (a toy for contextual CRFs).

Every scene is a ``grid x grid`` array of ``cell x cell``-pixel cells on one background,
"water" (blue) or "road" (grey), with one or two red squares of 2-3 cells. A red square is a
"boat" (class 1) on water and a "car" (class 2) on road: its own pixels are identical in both
cases, so a model that looks at one cell at a time cannot do better than guessing between
boat and car, while a pairwise potential between the square and its surroundings resolves it.
Used by ``examples/contextual_crf.py`` and the contextual tests; for VOC-layout scenes on
disk see :mod:`deepcrf.data.synthetic`.
"""

from __future__ import annotations

import torch

__all__ = ["CELL_CLASSES", "context_cell_scenes"]

#: Class names of the cell labels.
CELL_CLASSES = ("background", "boat", "car")
WATER, ROAD, RED = (0.1, 0.2, 0.9), (0.5, 0.5, 0.5), (0.9, 0.1, 0.1)


def context_cell_scenes(
    n: int, seed: int, grid: int = 12, cell: int = 2, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, grid*cell, grid*cell) in 0..1 plus noise, and cell labels (n, grid, grid):
    0 background, 1 boat, 2 car. Deterministic in ``seed``."""
    for name, value in (("n", n), ("grid", grid), ("cell", cell)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if grid < 3:
        raise ValueError(f"grid: expected at least 3 cells (a square of up to 3), got {grid}")
    g = torch.Generator().manual_seed(seed)
    colours = torch.zeros(n, 3, grid, grid)
    labels = torch.zeros(n, grid, grid, dtype=torch.long)
    for i in range(n):
        road = bool(torch.randint(0, 2, (1,), generator=g))
        colours[i] = torch.tensor(ROAD if road else WATER).view(3, 1, 1)
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            size = int(torch.randint(2, 4, (1,), generator=g))
            r, c = (int(v) for v in torch.randint(0, grid - size + 1, (2,), generator=g))
            colours[i, :, r : r + size, c : c + size] = torch.tensor(RED).view(3, 1, 1)
            labels[i, r : r + size, c : c + size] = 2 if road else 1
    pixels = colours.repeat_interleave(cell, 2).repeat_interleave(cell, 3)
    return pixels + noise * torch.randn(pixels.shape, generator=g), labels
