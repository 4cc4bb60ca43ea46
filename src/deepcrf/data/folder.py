"""A generic dataset for custom data: an images folder and a masks folder paired by file stem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepcrf.fileio import files_by_stem

from .base import SegmentationDataset
from .io import IMAGE_EXTENSIONS
from .lists import read_list, resolve_listed_path

__all__ = ["FolderSegmentation", "pair_by_stem"]


def pair_by_stem(
    images_dir: str | Path, masks_dir: str | Path, names: list[str] | None = None
) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every stem (or every listed name); errors list unpaired files."""
    images = files_by_stem(images_dir, IMAGE_EXTENSIONS, "images_dir")
    masks = files_by_stem(masks_dir, (".png",), "masks_dir")
    if names is None:
        if not images:
            raise ValueError(f"images_dir: no images in {images_dir}")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        wanted = sorted(images)
    else:
        no_mask = [n for n in names if n not in masks]
        no_image = [n for n in names if n not in images]
        wanted = list(names)
    problems = []
    if no_mask:
        problems.append(f"{len(no_mask)} without a mask in {masks_dir}: {no_mask[:10]}")
    if no_image:
        problems.append(f"{len(no_image)} without an image in {images_dir}: {no_image[:10]}")
    if problems:
        raise FileNotFoundError("unpaired samples: " + "; ".join(problems))
    return [(n, images[n], masks[n]) for n in wanted]


class FolderSegmentation(SegmentationDataset):
    """Images in ``images_dir`` and index-PNG masks in ``masks_dir``, matched by file stem.

    ``list_file`` (optional) holds sample names or ``image mask`` path pairs (relative to
    the parent of ``images_dir``); without it every image is used and every image must have a
    mask. ``label_map`` remaps raw mask values (see ``SegmentationDataset``).
    """

    def __init__(
        self,
        images_dir: str | Path,
        masks_dir: str | Path,
        num_classes: int,
        list_file: str | Path | None = None,
        transform: Callable | None = None,
        label_map: np.ndarray | None = None,
        **kwargs,
    ) -> None:
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        split = str(list_file) if list_file is not None else str(images_dir)
        if list_file is None:
            entries = pair_by_stem(images_dir, masks_dir)
        else:
            rows = read_list(list_file)
            if rows and all(len(r) == 2 for r in rows):
                base = images_dir.parent
                entries = []
                for img, lab in rows:
                    ip = resolve_listed_path(img, base, Path(list_file).parent)
                    entries.append((ip.stem, ip, resolve_listed_path(lab, base)))
            elif all(len(r) == 1 for r in rows):
                entries = pair_by_stem(images_dir, masks_dir, [r[0] for r in rows])
            else:
                raise ValueError(f"list_file: {list_file} mixes names and path pairs")
        super().__init__(
            entries, num_classes, transform=transform, label_map=label_map, split=split, **kwargs
        )
