"""Held-out training images (``data.holdout``): how many, which (by file name alone), the
split of a dataset into training images and whole held-out images, and the errors."""

from __future__ import annotations

import random

import pytest
import torch

from deepcrf.recipes.config import DataConfig
from deepcrf.recipes.data import build_dataset
from deepcrf.recipes.holdout import Best, holdout_count, holdout_indices, split_holdout

NAMES = [f"scene_{i:05d}" for i in range(110)]


@pytest.mark.parametrize(
    ("holdout", "total", "count"),
    [(0, 10, 0), (0.15, 110, 17), (0.15, 100, 15), (0.1, 4, 1), (0.01, 8, 1), (3, 8, 3)],
)
def test_holdout_count(holdout, total, count):
    assert holdout_count(holdout, total) == count


@pytest.mark.parametrize(
    ("holdout", "total", "message"),
    [
        (8, 8, "leaves no training image"),
        (0.5, 1, "leaves no training image"),
        (2.5, 10, "whole number"),
        (-0.1, 10, r"data\.holdout"),
    ],
)
def test_holdout_count_errors(holdout, total, message):
    with pytest.raises(ValueError, match=message):
        holdout_count(holdout, total)


def test_held_images_depend_on_the_names_alone():
    held = {NAMES[i] for i in holdout_indices(NAMES, 0.15)}
    assert len(held) == 17
    shuffled = NAMES[:]
    random.Random(1).shuffle(shuffled)
    assert {shuffled[i] for i in holdout_indices(shuffled, 0.15)} == held
    # a longer list keeps holding out the images it held out, as long as they rank first
    assert set(holdout_indices(NAMES, 17)) == set(holdout_indices(NAMES, 0.15))
    assert {NAMES[i] for i in holdout_indices(NAMES, 5)} <= held
    with pytest.raises(ValueError, match="more than once"):
        holdout_indices([*NAMES[:5], NAMES[0]], 1)


def test_split_is_disjoint_and_whole(voc_tree):
    cfg = DataConfig(root=str(voc_tree), crop_size=24)
    train = build_dataset(cfg, "train", 7, True, seed=0)
    whole = build_dataset(cfg, "train", 7, False, seed=0)
    kept, held = split_holdout(train, whole, 0.25, "train")
    assert len(kept) == 6 and len(held) == 2  # 8 training images
    assert not set(kept.names) & set(held.names)
    assert sorted(kept.names + held.names) == sorted(train.names)
    assert held[0]["raw_image"].shape == (48, 48, 3)  # whole images, not crops
    assert kept[0]["raw_image"].shape == (24, 24, 3)
    assert held[0]["name"] == held.names[0]
    assert split_holdout(train, whole, 0, "train") == (train, None)


def test_best_offer_ties_and_copies():
    model = torch.nn.Linear(2, 2)
    best = Best()
    assert best.offer(0, 0.5, model) and not best.offer(1, 0.5, model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(best.model["weight"], model.weight)  # a copy, not a view
    assert best.offer(2, 0.6, model) and best.step == 2
