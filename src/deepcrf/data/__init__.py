"""Datasets (samples: ``image``, ``label``, ``raw_image``, ``name``), transforms, class names."""

from .base import SegmentationDataset
from .cityscapes import Cityscapes, convert_cityscapes_trainids, labelids_to_trainids
from .classes import (
    CITYSCAPES_CLASSES,
    CONTEXT_CLASSES,
    NYUD40_CLASSES,
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
    class_names,
)
from .coarse import coarse_probabilities
from .context import PascalContext
from .context_cells import CELL_CLASSES, context_cell_scenes
from .folder import FolderSegmentation
from .io import read_image, read_label
from .nyud import NYUDv2
from .sbd import convert_sbd, read_sbd_mat
from .synthetic import SyntheticScenes, write_voc_tree
from .voc import VOCSegmentation

__all__ = [
    "CELL_CLASSES",
    "CITYSCAPES_CLASSES",
    "CONTEXT_CLASSES",
    "NYUD40_CLASSES",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "Cityscapes",
    "FolderSegmentation",
    "NYUDv2",
    "PascalContext",
    "SegmentationDataset",
    "SyntheticScenes",
    "VOCSegmentation",
    "class_names",
    "coarse_probabilities",
    "context_cell_scenes",
    "convert_cityscapes_trainids",
    "convert_sbd",
    "labelids_to_trainids",
    "read_image",
    "read_label",
    "read_sbd_mat",
    "write_voc_tree",
]
