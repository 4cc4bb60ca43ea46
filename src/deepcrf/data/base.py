"""The shared dataset: a list of (name, image path, label path) turned into sample dicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import read_image, read_label
from .transforms import normalize

__all__ = ["SegmentationDataset", "check_files"]

IGNORE = 255


def check_files(entries: Sequence[tuple[str, Path, Path | None]], split: str) -> None:
    """Raise FileNotFoundError listing every entry whose image or label file is missing."""
    missing = []
    for name, img, lab in entries:
        gone = [str(p) for p in (img, lab) if p is not None and not Path(p).is_file()]
        if gone:
            missing.append(f"{name}: {', '.join(gone)}")
    if missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise FileNotFoundError(
            f"split {split!r}: {len(missing)} of {len(entries)} entries have no image or "
            f"label file:\n  {shown}{more}"
        )


class SegmentationDataset(Dataset):
    """Samples ``{"image", "label", "raw_image", "name"}`` from explicit file lists.

    - ``image``: float32 (3, H, W), ``raw_image`` normalised (``normalize`` mode);
    - ``label``: int64 (H, W), 255 = ignore (after ``label_map`` when given);
    - ``raw_image``: uint8 (H, W, 3) RGB, the pixels a CRF needs;
    - ``name``: the sample id (file stem).

    ``transform(sample, rng)`` acts on numpy ``raw_image``/``label`` before normalisation.
    With ``seed`` set, the generator for item ``i`` is derived from (seed, epoch, i), so a run
    is reproducible; call :meth:`set_epoch` to vary it between epochs.
    ``label_map`` is a 256- or longer int lookup table applied to raw label values (values
    mapped to 255 become ignore), e.g. Cityscapes labelIds -> trainIds.
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, str | Path, str | Path | None]],
        num_classes: int,
        transform: Callable | None = None,
        normalize: str | None = "imagenet",
        seed: int | None = None,
        label_map: np.ndarray | None = None,
        split: str = "",
        check: bool = True,
    ) -> None:
        self.entries = [(n, Path(i), None if lab is None else Path(lab)) for n, i, lab in entries]
        if not self.entries:
            raise ValueError(f"split {split!r}: the split lists no samples")
        if check:
            check_files(self.entries, split)
        self.num_classes = num_classes
        self.transform = transform
        self.normalize = normalize
        self.seed = seed
        self.epoch = 0
        self.label_map = None if label_map is None else np.asarray(label_map, dtype=np.int64)
        self.split = split

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def names(self) -> list[str]:
        return [n for n, _, _ in self.entries]

    def load_label(self, index: int) -> np.ndarray | None:
        """The (H, W) int64 label of item ``index`` after ``label_map``, untransformed."""
        _, _, lab_path = self.entries[index]
        if lab_path is None:
            return None
        lab = read_label(lab_path)
        if self.label_map is not None:
            if lab.min() < 0 or lab.max() >= len(self.label_map):
                raise ValueError(f"label: {lab_path} has values outside the label map")
            lab = self.label_map[lab]
        bad = (lab >= self.num_classes) & (lab != IGNORE) | (lab < 0)
        if bad.any():
            vals = np.unique(lab[bad])[:10].tolist()
            raise ValueError(
                f"label: {lab_path} has values {vals} outside 0..{self.num_classes - 1} "
                f"that are not {IGNORE}"
            )
        return lab

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        name, img_path, _ = self.entries[index]
        raw = read_image(img_path)
        sample: dict = {"raw_image": raw, "name": name}
        lab = self.load_label(index)
        if lab is not None:
            if lab.shape != raw.shape[:2]:
                raise ValueError(
                    f"label: {self.entries[index][2]} is {lab.shape[1]}x{lab.shape[0]} but "
                    f"image {img_path} is {raw.shape[1]}x{raw.shape[0]}"
                )
            sample["label"] = lab
        if self.transform is not None:
            if self.seed is None:
                rng = np.random.default_rng()
            else:
                rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = self.transform(sample, rng)
        raw = np.ascontiguousarray(sample["raw_image"])
        sample["raw_image"] = torch.from_numpy(raw)
        sample["image"] = normalize(raw, self.normalize)
        if "label" in sample:
            sample["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"])).long()
        return sample
