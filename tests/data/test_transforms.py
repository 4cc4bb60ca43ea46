"""Joint transforms keep image, label and raw image aligned; seeded runs repeat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.data import VOCSegmentation
from deepcrf.data.transforms import (
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    normalize,
)
from fake_trees import blocky_scene, make_voc_tree


def aligned(raw: np.ndarray, label: np.ndarray) -> bool:
    """Interior pixels (3x3 neighbourhood of one label) must have red == 10 * label."""
    lab = np.pad(label, 1, mode="edge")
    same = np.ones_like(label, dtype=bool)
    h, w = label.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= lab[dy : dy + h, dx : dx + w] == label
    interior = same & (label != 255)
    assert interior.sum() > 20
    return bool(np.all(np.abs(raw[..., 0][interior].astype(int) - 10 * label[interior]) <= 1))


def test_flip_and_crop_exact():
    rng = np.random.default_rng(0)
    raw, label = blocky_scene(rng, 20, 30, 5)
    s = RandomHorizontalFlip(p=1.0)({"raw_image": raw, "label": label}, rng)
    np.testing.assert_array_equal(s["raw_image"], raw[:, ::-1])
    np.testing.assert_array_equal(s["label"], label[:, ::-1])
    s = RandomCrop((10, 12))({"raw_image": raw, "label": label}, np.random.default_rng(3))
    # find the crop offset from the (unique) red/green pattern and check the label matches
    found = [
        (t, le)
        for t in range(11)
        for le in range(19)
        if np.array_equal(raw[t : t + 10, le : le + 12], s["raw_image"])
    ]
    assert len(found) >= 1
    t, le = found[0]
    np.testing.assert_array_equal(s["label"], label[t : t + 10, le : le + 12])


def test_crop_pads_label_with_255():
    raw = np.full((4, 5, 3), 9, dtype=np.uint8)
    label = np.ones((4, 5), dtype=np.int64)
    s = RandomCrop((8, 9), fill=(1, 2, 3))(
        {"raw_image": raw, "label": label}, np.random.default_rng(0)
    )
    assert s["raw_image"].shape == (8, 9, 3) and s["label"].shape == (8, 9)
    np.testing.assert_array_equal(s["label"][:4, :5], label)
    assert (s["label"][4:] == 255).all() and (s["label"][:, 5:] == 255).all()
    np.testing.assert_array_equal(s["raw_image"][5, 6], [1, 2, 3])
    c = CenterCrop(2)({"raw_image": raw, "label": label})
    assert c["label"].shape == (2, 2)


def test_label_resizing_is_nearest_neighbour():
    label = np.arange(12).reshape(3, 4).astype(np.int64)
    raw = np.zeros((3, 4, 3), dtype=np.uint8)
    s = Resize((6, 8))({"raw_image": raw, "label": label})
    expected = label[np.arange(6) // 2][:, np.arange(8) // 2]
    np.testing.assert_array_equal(s["label"], expected)
    rng = np.random.default_rng(1)
    raw, label = blocky_scene(rng, 40, 50, 7)
    s = RandomScale(0.5, 1.5)({"raw_image": raw, "label": label}, rng)
    assert set(np.unique(s["label"])) <= set(np.unique(label))  # no blended ids


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_composed_pipeline_keeps_alignment(seed):
    rng = np.random.default_rng(seed)
    raw, label = blocky_scene(rng, 60, 80, 9)
    t = Compose([RandomScale(0.7, 1.4), RandomCrop((48, 48)), RandomHorizontalFlip()])
    s = t({"raw_image": raw, "label": label}, np.random.default_rng(seed + 10))
    assert s["raw_image"].shape[:2] == s["label"].shape == (48, 48)
    assert aligned(s["raw_image"], s["label"])


def test_dataset_transforms_seeded_and_aligned(tmp_path):
    make_voc_tree(tmp_path, {"train": ["a", "b"]}, size=(60, 80), k=9)
    t = Compose([RandomScale(0.7, 1.4), RandomCrop((40, 40)), RandomHorizontalFlip()])
    a = VOCSegmentation(tmp_path, "train", transform=t, seed=5)
    b = VOCSegmentation(tmp_path, "train", transform=t, seed=5)
    for i in range(2):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["raw_image"], sb["raw_image"])
        assert torch.equal(sa["label"], sb["label"])
        assert torch.equal(sa["image"], normalize(sa["raw_image"].numpy()))
    a.set_epoch(1)
    changed = any(not torch.equal(a[i]["label"], b[i]["label"]) for i in range(2))
    assert changed


def test_bad_arguments():
    with pytest.raises(ValueError, match="RandomScale"):
        RandomScale(1.5, 0.5)
    with pytest.raises(ValueError, match="mode"):
        normalize(np.zeros((2, 2, 3), np.uint8), "bgr")
    with pytest.raises(ValueError, match="raw_image"):
        normalize(np.zeros((2, 2), np.uint8))


def test_dataloader_batches_cropped_samples(tmp_path):
    from torch.utils.data import DataLoader

    make_voc_tree(tmp_path, {"train": ["a", "b", "c"]}, size=(30, 40))
    ds = VOCSegmentation(tmp_path, "train", transform=RandomCrop(24), seed=0)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["label"].shape == (3, 24, 24)
    assert batch["raw_image"].shape == (3, 24, 24, 3) and batch["name"] == ["a", "b", "c"]
