"""NYU Depth v2 with the 40-class labels of Gupta et al. (795 train / 654 test images).

Layout (the usual export of the labelled .mat, one file per image)::

    root/images/<name>.png|.jpg     RGB images
    root/labels40/<name>.png        0 = unlabelled, 1..40 = classes
    root/train.txt, root/test.txt   names, one per line

Labels are shifted to 0..39 with 0 (unlabelled) -> 255 (ignore).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .classes import NYUD40_CLASSES
from .folder import FolderSegmentation

__all__ = ["NYUD40_LABEL_MAP", "NYUDv2"]

NYUD40_LABEL_MAP = np.full(256, 255, dtype=np.int64)
NYUD40_LABEL_MAP[1:41] = np.arange(40)


class NYUDv2(FolderSegmentation):
    """NYUDv2, 40 classes; see the module docstring for the layout."""

    num_classes = len(NYUD40_CLASSES)
    classes = NYUD40_CLASSES

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None, **kw
    ) -> None:
        root = Path(root)
        super().__init__(
            root / "images",
            root / "labels40",
            self.num_classes,
            list_file=root / f"{split}.txt",
            transform=transform,
            label_map=NYUD40_LABEL_MAP,
            **kw,
        )
