"""Synthetic scenes: determinism, classes, context rule, thin structures, export, speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.data import SYNTHETIC_CLASSES, SyntheticScenes
from deepcrf.data.transforms import Compose, RandomCrop, RandomHorizontalFlip

ROAD, WATER, GRASS, CAR, BOAT, PERSON, POLE = range(7)


def test_deterministic_per_seed_and_index():
    a, b = SyntheticScenes(5, seed=3), SyntheticScenes(5, seed=3)
    for i in (0, 4):
        ra, la = a.generate(i)
        rb, lb = b.generate(i)
        assert np.array_equal(ra, rb) and np.array_equal(la, lb)
    assert not np.array_equal(a.generate(0)[1], a.generate(1)[1])
    assert not np.array_equal(a.generate(0)[0], SyntheticScenes(5, seed=4).generate(0)[0])
    # the order of generation does not matter
    assert np.array_equal(SyntheticScenes(5, seed=3).generate(4)[0], ra)


def test_sample_dict_and_transform():
    ds = SyntheticScenes(3, size=(64, 96), seed=1)
    s = ds[2]
    assert s["image"].shape == (3, 64, 96) and s["image"].dtype == torch.float32
    assert s["raw_image"].shape == (64, 96, 3) and s["raw_image"].dtype == torch.uint8
    assert s["label"].dtype == torch.int64 and s["name"] == "synth_1_000002"
    t = Compose([RandomCrop(48), RandomHorizontalFlip()])
    s1 = SyntheticScenes(3, seed=1, transform=t)[0]
    s2 = SyntheticScenes(3, seed=1, transform=t)[0]
    assert torch.equal(s1["label"], s2["label"]) and s1["label"].shape == (48, 48)


def test_classes_and_statistics():
    ds = SyntheticScenes(40, seed=0)
    counts = np.zeros(256, np.int64)
    vehicle_red = {CAR: [], BOAT: []}
    neighbours = {CAR: np.zeros(3), BOAT: np.zeros(3)}
    for i in range(len(ds)):
        raw, lab = ds.generate(i)
        assert raw.dtype == np.uint8 and lab.dtype == np.int64
        counts += np.bincount(lab.ravel(), minlength=256)
        for cls in (CAR, BOAT):
            m = lab == cls
            if m.sum() > 30:
                vehicle_red[cls].append(raw[..., 0][m].mean())
            ring = np.zeros_like(m)
            ring[1:] |= m[:-1]
            ring[:-1] |= m[1:]
            ring[:, 1:] |= m[:, :-1]
            ring[:, :-1] |= m[:, 1:]
            ring &= ~m
            for k in (ROAD, WATER, GRASS):
                neighbours[cls][k] += (lab[ring] == k).sum()
    assert np.all(counts[: len(SYNTHETIC_CLASSES)] > 0) and counts[7:].sum() == 0
    # one appearance for car and boat: same colour statistics
    assert abs(np.mean(vehicle_red[CAR]) - np.mean(vehicle_red[BOAT])) < 12
    # context: cars border road more than water, boats the other way round
    assert neighbours[CAR][ROAD] > 2 * neighbours[CAR][WATER]
    assert neighbours[BOAT][WATER] > 2 * neighbours[BOAT][ROAD]
    assert counts[POLE] < 0.02 * counts[:7].sum()  # thin


def test_num_classes_subset_and_void_band():
    stuff_only = SyntheticScenes(5, num_classes=3, seed=2)
    assert max(stuff_only.generate(i)[1].max() for i in range(5)) <= GRASS
    banded = SyntheticScenes(5, seed=2, void_band=3)
    plain = SyntheticScenes(5, seed=2)
    for i in range(5):
        lb, lp = banded.generate(i)[1], plain.generate(i)[1]
        assert np.array_equal(banded.generate(i)[0], plain.generate(i)[0])
        changed = lb != lp
        assert np.all(lb[changed] == 255)
        assert not np.any(lp[changed] == POLE)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticScenes(2, num_classes=8)
    with pytest.raises(ValueError, match="n"):
        SyntheticScenes(0)
    with pytest.raises(IndexError):
        SyntheticScenes(2).generate(2)

