"""PASCAL VOC 2012 segmentation, with the SBD-augmented ``trainaug`` split (10,582 images)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import SegmentationDataset
from .classes import VOC_CLASSES
from .lists import read_list, resolve_listed_path

__all__ = ["VOCSegmentation", "find_voc_root"]

AUG_LABEL_DIR = "SegmentationClassAug"
AUG_LIST_NAMES = ("trainaug.txt", "train_aug.txt")


def find_voc_root(root: str | Path, year: str = "2012") -> Path:
    """The ``VOC<year>`` folder given it, ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    root = Path(root)
    for cand in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(
        f"root: no VOC{year} tree under {root} (looked for JPEGImages in "
        f"{root}/VOCdevkit/VOC{year}, {root}/VOC{year} and {root})"
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC segmentation: 21 classes (background + 20), 255 = void.

    ``split``: ``train``/``val``/``trainval`` (or any ``ImageSets/Segmentation/<split>.txt``,
    labels from ``SegmentationClass``); ``trainaug`` (names from
    ``ImageSets/Segmentation/trainaug.txt``, labels from ``SegmentationClassAug``); or a path to
    a list file of names or of ``image label`` path pairs (relative paths, with or without a
    leading slash, are resolved against the VOC2012 folder, then ``root``).
    ``num_classes`` overrides 21 for VOC-layout trees of other data (e.g. synthetic scenes).
    Other keyword arguments go to :class:`~deepcrf.data.base.SegmentationDataset`.
    """

    num_classes = len(VOC_CLASSES)
    classes = VOC_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable | None = None,
        year: str = "2012",
        num_classes: int | None = None,
        **kwargs,
    ) -> None:
        self.root = find_voc_root(root, year)
        if num_classes is not None:
            self.num_classes = num_classes
        entries = self._entries(Path(root), self.root, split)
        super().__init__(entries, self.num_classes, transform=transform, split=str(split), **kwargs)

    @staticmethod
    def _entries(user_root: Path, voc: Path, split: str):
        seg_sets = voc / "ImageSets" / "Segmentation"
        label_dir = voc / "SegmentationClass"
        if split in ("trainaug", "train_aug"):
            label_dir = voc / AUG_LABEL_DIR
            found = [seg_sets / n for n in AUG_LIST_NAMES if (seg_sets / n).is_file()]
            if not found:
                raise FileNotFoundError(
                    f"split 'trainaug': no {' or '.join(AUG_LIST_NAMES)} in {seg_sets}; run "
                    "`deepcrf data sbd-convert` or pass a list file of image/label pairs"
                )
            list_path = found[0]
        elif (seg_sets / f"{split}.txt").is_file():
            list_path = seg_sets / f"{split}.txt"
        elif Path(split).is_file():
            list_path = Path(split)
        else:
            raise FileNotFoundError(
                f"split: {split!r} is neither a list in {seg_sets} nor a list file"
            )
        entries = []
        for fields in read_list(list_path):
            if len(fields) == 1:
                name = fields[0]
                entries.append(
                    (name, voc / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png")
                )
            else:
                img = resolve_listed_path(fields[0], voc, user_root)
                lab = resolve_listed_path(fields[1], voc, user_root)
                entries.append((img.stem, img, lab))
        return entries
