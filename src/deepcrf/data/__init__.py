"""Datasets (samples: ``image``, ``label``, ``raw_image``, ``name``), transforms, class names."""

# Submodules are imported when one of their names is first used: a command that needs
# one reader (``deepcrf.data.io``) does not pay for every dataset module at start-up.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_SOURCES = {
    "SegmentationDataset": "base",
    "Cityscapes": "cityscapes",
    "convert_cityscapes_trainids": "cityscapes",
    "labelids_to_trainids": "cityscapes",
    "CITYSCAPES_CLASSES": "classes",
    "CONTEXT_CLASSES": "classes",
    "NYUD40_CLASSES": "classes",
    "SYNTHETIC_CLASSES": "classes",
    "VOC_CLASSES": "classes",
    "class_names": "classes",
    "coarse_probabilities": "coarse",
    "PascalContext": "context",
    "CELL_CLASSES": "context_cells",
    "context_cell_scenes": "context_cells",
    "FolderSegmentation": "folder",
    "read_image": "io",
    "read_label": "io",
    "NYUDv2": "nyud",
    "convert_sbd": "sbd",
    "read_sbd_mat": "sbd",
    "SyntheticScenes": "synthetic",
    "write_voc_tree": "synthetic",
    "VOCSegmentation": "voc",
}

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


def __getattr__(name: str):
    """Import the submodule that defines ``name`` on first use (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
