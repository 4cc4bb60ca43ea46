"""Builders of small fake dataset trees for the data tests (never real third-party data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deepcrf.viz import save_label_png


def blocky_scene(rng: np.random.Generator, h: int, w: int, k: int, void: bool = True):
    """A label map of rectangles with a 1-px void outline, and an image whose red channel is
    10 * label (void drawn as 250) so alignment can be checked from the pixels."""
    label = np.zeros((h, w), dtype=np.int64)
    for _ in range(3):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        y1, x1 = rng.integers(y0 + 3, h + 1), rng.integers(x0 + 3, w + 1)
        label[y0:y1, x0:x1] = rng.integers(1, k)
    if void:
        edge = np.zeros_like(label, dtype=bool)
        edge[1:] |= label[1:] != label[:-1]
        edge[:, 1:] |= label[:, 1:] != label[:, :-1]
        label[edge] = 255
    raw = np.zeros((h, w, 3), dtype=np.uint8)
    raw[..., 0] = np.where(label == 255, 250, label * 10)
    raw[..., 1] = (np.arange(w)[None, :] * 4 + np.arange(h)[:, None] * 2) % 256
    raw[..., 2] = 7
    return raw, label


def make_voc_tree(
    root: Path,
    splits: dict[str, list[str]],
    size=(24, 32),
    k: int = 21,
    seed: int = 0,
    label_dir: str = "SegmentationClass",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """root/VOCdevkit/VOC2012 with JPEG images, palette-PNG labels and split lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {}
    for split, names in splits.items():
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for n in names:
            if n in data:
                continue
            raw, label = blocky_scene(rng, *size, k)
            Image.fromarray(raw).save(voc / "JPEGImages" / f"{n}.jpg", quality=100, subsampling=0)
            save_label_png(voc / label_dir / f"{n}.png", label)
            data[n] = (raw, label)
    return data
