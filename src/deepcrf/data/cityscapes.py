"""Cityscapes (fine annotations), 19 trainId classes, 255 = ignore."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..viz import save_label_png
from .base import SegmentationDataset
from .classes import CITYSCAPES_CLASSES, CITYSCAPES_LABELID_TO_TRAINID
from .io import read_label

__all__ = ["Cityscapes", "convert_cityscapes_trainids", "labelids_to_trainids"]

IMG_SUFFIX = "_leftImg8bit.png"


def labelids_to_trainids(label_ids: np.ndarray) -> np.ndarray:
    """Map official labelIds (0..33, -1) to trainIds (0..18, 255 = ignore)."""
    arr = np.asarray(label_ids, dtype=np.int64)
    out = np.full(arr.shape, 255, dtype=np.int64)
    ok = (arr >= 0) & (arr < 256)
    out[ok] = CITYSCAPES_LABELID_TO_TRAINID[arr[ok]]
    return out


class Cityscapes(SegmentationDataset):
    """``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with labels from
    ``root/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``; where those are absent, the
    ``*_gtFine_labelIds.png`` files are converted on the fly (no cityscapesScripts needed)."""

    num_classes = len(CITYSCAPES_CLASSES)
    classes = CITYSCAPES_CLASSES

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None, **kw
    ) -> None:
        root = Path(root)
        img_root = root / "leftImg8bit" / split
        if not img_root.is_dir():
            raise FileNotFoundError(f"root: no folder {img_root} (split {split!r})")
        images = sorted(img_root.glob(f"*/*{IMG_SUFFIX}"))
        if not images:
            raise ValueError(f"root: no *{IMG_SUFFIX} images under {img_root}")
        gt_root = root / "gtFine" / split
        use_train_ids = all(
            (
                gt_root / p.parent.name / f"{p.name[: -len(IMG_SUFFIX)]}_gtFine_labelTrainIds.png"
            ).is_file()
            for p in images
        )
        kind = "labelTrainIds" if use_train_ids else "labelIds"
        entries = []
        for p in images:
            stem = p.name[: -len(IMG_SUFFIX)]
            entries.append((stem, p, gt_root / p.parent.name / f"{stem}_gtFine_{kind}.png"))
        label_map = None if use_train_ids else CITYSCAPES_LABELID_TO_TRAINID
        super().__init__(
            entries, self.num_classes, transform=transform, label_map=label_map, split=split, **kw
        )


def convert_cityscapes_trainids(root: str | Path, split: str | None = None) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` next to every ``*_gtFine_labelIds.png``."""
    gt = Path(root) / "gtFine"
    pattern = f"{split}/*/*_gtFine_labelIds.png" if split else "*/*/*_gtFine_labelIds.png"
    files = sorted(gt.glob(pattern))
    if not files:
        raise FileNotFoundError(f"root: no *_gtFine_labelIds.png files under {gt}")
    for f in tqdm(files, desc="labelIds -> trainIds", unit="img"):
        out = f.with_name(f.name.replace("_labelIds.png", "_labelTrainIds.png"))
        save_label_png(out, labelids_to_trainids(read_label(f)), "cityscapes")
    return len(files)
