"""Tiled refinement: tiles cover the input once, the overlap follows the bandwidths, and
tiled results agree with the untiled CRF on 2-D images, 3-D volumes and torch batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf import refine
from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.tiling import (
    estimate_bytes,
    iter_tiles,
    memory_budget,
    overlap_pixels,
    plan,
    tile_boxes,
)

SMALL = {"gaussian_sxy": 1.0, "bilateral_sxy": 3.0, "bilateral_srgb": 13.0, "iterations": 5}


def scene(h=48, w=64, seed=0):
    scenes = SyntheticScenes(1, size=(h, w), seed=seed)
    image, label = scenes.generate(0)
    probs = coarse_probabilities(label, scenes.num_classes, stride=8, noise=1.5, seed=seed)
    return image, label, probs


@pytest.mark.parametrize(
    ("shape", "core", "overlap"), [((10, 13), (4, 5), (2, 3)), ((5, 6, 7), (2, 6, 3), (1, 0, 9))]
)
def test_tile_cores_cover_every_pixel_once(shape, core, overlap):
    count = np.zeros(shape, int)
    for core_box, padded, inner in tile_boxes(shape, core, overlap):
        count[core_box] += 1
        for c, p, i, o, s in zip(core_box, padded, inner, overlap, shape):
            assert p.start == max(0, c.start - o) and p.stop == min(s, c.stop + o)
            assert (i.start + p.start, i.stop + p.start) == (c.start, c.stop)
    assert (count == 1).all()


def test_overlap_follows_bandwidths_and_spacing():
    assert overlap_pixels(2, [3.0, 80.0]) == [240, 240]
    assert overlap_pixels(3, [(2.0, 5.0, 5.0)], spacing=(2.0, 1.0, 1.0)) == [3, 15, 15]


def test_tiled_matches_untiled_on_an_image():
    image, _, probs = scene()
    whole = refine(probs, image, tile=False, **SMALL)
    same = refine(probs, image, tile=64, **SMALL)  # one tile: exactly the untiled CRF
    np.testing.assert_allclose(same, whole, atol=1e-6)
    tiled = refine(probs, image, tile=12, **SMALL)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.99
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-4)


def test_tiled_matches_untiled_on_a_volume():
    rng = np.random.default_rng(0)
    labels = np.zeros((8, 20, 20), int)
    labels[:, 5:15, 4:12] = 1
    volume = (labels[..., None] * 100 + rng.normal(0, 5, (8, 20, 20, 1))).clip(0, 255)
    probs = np.stack([1.0 - 0.7 * labels, 0.3 + 0.4 * labels]).astype(np.float32)
    probs = np.clip(probs + rng.normal(0, 0.3, probs.shape), 0.01, None).astype(np.float32)
    probs /= probs.sum(0)
    opts = {**SMALL, "spacing": (2.0, 1.0, 1.0), "bilateral_sxy": 2.0}
    whole = refine(probs, volume.astype(np.float32), tile=False, **opts)
    tiled = refine(probs, volume.astype(np.float32), tile=6, **opts)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.99


def test_torch_batches_tile_on_their_device():
    image, _, probs = scene(seed=1)
    probs_t = torch.from_numpy(np.stack([probs, probs[:, ::-1].copy()]))
    images_t = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2)
    tiled = refine(probs_t, images_t, tile=16, **SMALL)
    whole = refine(probs_t, images_t, tile=False, **SMALL)
    assert isinstance(tiled, torch.Tensor) and tiled.shape == probs_t.shape
    assert (tiled.argmax(1) == whole.argmax(1)).float().mean() >= 0.99


def test_budget_selects_tiling_automatically(monkeypatch):
    image, _, probs = scene()
    labels = probs.shape[0]
    assert plan(probs.shape[1:], labels, SMALL, None) is None
    per_pixel = estimate_bytes(1, labels, [2, 5])
    monkeypatch.setenv("DEEPCRF_MEMORY_BUDGET", str(per_pixel * 900))
    assert memory_budget() == per_pixel * 900
    core, overlap = plan(probs.shape[1:], labels, SMALL, None)
    assert overlap == [9, 9]
    assert (min(core[0] + 18, 48)) * min(core[1] + 18, 64) <= 900 or min(core) == 32
    auto = refine(probs, image, **SMALL)
    monkeypatch.delenv("DEEPCRF_MEMORY_BUDGET")
    chosen = refine(probs, image, tile=core[0], **SMALL) if core[0] == core[1] else None
    if chosen is not None:
        np.testing.assert_allclose(auto, chosen, atol=1e-6)
    whole = refine(probs, image, tile=False, **SMALL)
    assert (auto.argmax(0) == whole.argmax(0)).mean() >= 0.99


@pytest.mark.parametrize("raw", ["lots", "-1G", "0"])
def test_bad_budget_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("DEEPCRF_MEMORY_BUDGET", raw)
    with pytest.raises(ValueError, match="DEEPCRF_MEMORY_BUDGET"):
        memory_budget()


def test_iter_tiles_streams_cores():
    image, _, probs = scene()
    seen = np.zeros(probs.shape[1:], int)
    for box, q in iter_tiles(refine, probs, image, SMALL, [16, 16], [9, 9]):
        seen[box] += 1
        assert q.shape == (probs.shape[0], *seen[box].shape)
    assert (seen == 1).all()


def test_label_maps_tile_without_building_the_whole_unary():
    from deepcrf import refine_labels

    image, label, _ = scene(seed=2)
    k = int(label.max()) + 1
    whole = refine_labels(label, image, k, gt_prob=0.6, tile=False, **SMALL)
    tiled = refine_labels(label, image, k, gt_prob=0.6, tile=12, **SMALL)
    assert tiled.shape == whole.shape == (k, *label.shape)
    assert (tiled.argmax(0) == whole.argmax(0)).mean() >= 0.99
    lab_t = torch.from_numpy(np.stack([label, label[::-1].copy()]))
    img_t = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2)
    tiled_t = refine_labels(lab_t, img_t, k, gt_prob=0.6, tile=12, **SMALL)
    assert tiled_t.shape == (2, k, *label.shape)
    np.testing.assert_allclose(tiled_t[0].numpy(), tiled, atol=1e-5)
