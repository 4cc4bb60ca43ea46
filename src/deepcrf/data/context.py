"""PASCAL-Context, 59 classes + background (60 labels, index 0 = background).

Layout: the VOC2012 tree (images from ``JPEGImages``) plus

    VOC2012/SegmentationClassContext/<name>.png    0 = background, 1..59 (CONTEXT_CLASSES)
    VOC2012/ImageSets/SegmentationContext/{train,val}.txt

as written by the usual conversion of ``trainval_merged.json`` to the 59-class label maps.
Values 255 (if any) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import SegmentationDataset
from .classes import CONTEXT_CLASSES
from .lists import read_list
from .voc import find_voc_root

__all__ = ["PascalContext"]


class PascalContext(SegmentationDataset):
    """PASCAL-Context (see the module docstring for the layout)."""

    num_classes = len(CONTEXT_CLASSES)
    classes = CONTEXT_CLASSES

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None, **kw
    ) -> None:
        voc = find_voc_root(root)
        list_path = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        rows = read_list(list_path)
        entries = [
            (r[0], voc / "JPEGImages" / f"{r[0]}.jpg",
             voc / "SegmentationClassContext" / f"{r[0]}.png")
            for r in rows
        ]  # fmt: skip
        super().__init__(entries, self.num_classes, transform=transform, split=split, **kw)
