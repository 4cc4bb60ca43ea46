"""Class names per dataset, and Cityscapes' labelId -> trainId table."""

from __future__ import annotations

import numpy as np

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABELID_TO_TRAINID",
    "CONTEXT_CLASSES",
    "NYUD40_CLASSES",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "class_names",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Official cityscapesScripts table: labelId -> trainId (255 = ignored in evaluation).
_CITYSCAPES_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_LABELID_TO_TRAINID = np.full(256, 255, dtype=np.int64)
for _label_id, _train_id in _CITYSCAPES_TRAIN.items():
    CITYSCAPES_LABELID_TO_TRAINID[_label_id] = _train_id

# Gupta et al. 2013 40-class NYUDv2 labels, in id order 1..40 (stored here as 0..39).
NYUD40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refrigerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip

# PASCAL-Context, the 59 most frequent classes (alphabetical, as in the common 59-class
# label files) plus background at index 0.
CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip

# deepcrf.data.SyntheticScenes: three textured "stuff" classes, two classes that share one
# appearance and differ only by context (a vehicle on road is a car, on water a boat), a
# context-free object class at several scales, and thin structures.
SYNTHETIC_CLASSES = ("road", "water", "grass", "car", "boat", "person", "pole")

_BY_NAME = {
    "voc": VOC_CLASSES,
    "pascal": VOC_CLASSES,
    "cityscapes": CITYSCAPES_CLASSES,
    "nyud": NYUD40_CLASSES,
    "nyudv2": NYUD40_CLASSES,
    "context": CONTEXT_CLASSES,
    "pascal_context": CONTEXT_CLASSES,
    "synthetic": SYNTHETIC_CLASSES,
}


def class_names(dataset: str) -> tuple[str, ...]:
    """Class names of a dataset by name (voc, cityscapes, nyud, context, synthetic)."""
    key = dataset.lower().replace("-", "_")
    if key not in _BY_NAME:
        raise ValueError(
            f"classes: unknown dataset {dataset!r}; expected one of {sorted(_BY_NAME)}"
        )
    return _BY_NAME[key]
