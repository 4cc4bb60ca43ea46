"""The context-cell toy scenes: deterministic, and the class of a red square is its background's."""

import pytest
import torch

from deepcrf.data import CELL_CLASSES, context_cell_scenes


def test_scenes_are_deterministic_and_shaped():
    a, la = context_cell_scenes(5, seed=3)
    b, lb = context_cell_scenes(5, seed=3)
    assert a.shape == (5, 3, 24, 24) and la.shape == (5, 12, 12)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, context_cell_scenes(5, seed=4)[0])


def test_object_class_follows_the_background_and_pixels_do_not():
    images, labels = context_cell_scenes(40, seed=0, noise=0.0)
    cells = images[:, :, ::2, ::2]  # one pixel per cell (no noise: the cell colour)
    red = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    is_red = (cells - red).abs().amax(1) < 1e-6
    assert torch.equal(is_red, labels > 0)  # objects are exactly the red cells, any class
    for img, lab in zip(cells, labels, strict=True):
        background = img[:, lab == 0][:, 0]
        on_road = bool(torch.allclose(background, torch.tensor([0.5, 0.5, 0.5])))
        objects = lab[lab > 0]
        assert bool((objects == (2 if on_road else 1)).all())
    assert {1, 2} <= set(labels.unique().tolist()) and len(CELL_CLASSES) == 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="grid"):
        context_cell_scenes(2, seed=0, grid=2)
    with pytest.raises(ValueError, match="n:"):
        context_cell_scenes(0, seed=0)
