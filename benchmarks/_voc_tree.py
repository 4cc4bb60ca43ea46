"""Write generated scenes as a VOC tree (JPEG photos, palette PNG labels, train/val lists,
classes.txt): the one writer behind the benchmark generators (_shapes_voc, _texture_voc,
_lookalike_voc)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

Scene = Callable[[int, int, tuple, int], tuple[np.ndarray, np.ndarray]]


def write_voc_tree(out: str | Path, scene: Scene, *, prefix: str, classes: Sequence[str],
                   palette: list[int], n: int, val: int, seed: int, size: tuple,
                   void: int, quality: int) -> Path:  # fmt: skip
    """``out/VOCdevkit/VOC2012`` with ``n`` scenes ``scene(seed, i, size, void)`` named
    ``{prefix}_{seed}_{i:05d}``, the last ``val`` of them in val.txt."""
    voc = Path(out) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rgb, lab = scene(seed, i, size, void)
        name = f"{prefix}_{seed}_{i:05d}"
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{name}.jpg", quality=quality)
        png = Image.fromarray(lab, mode="L").convert("P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{name}.png")
        names.append(name)
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("".join(f"{x}\n" for x in names[: n - val]))
    (sets / "val.txt").write_text("".join(f"{x}\n" for x in names[n - val :]))
    (voc / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return voc
