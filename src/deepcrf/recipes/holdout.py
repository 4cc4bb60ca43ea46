"""Held-out training images: a few images of the training split that a run never trains on.

DeepLab cross-validated its CRF on held-out images; a network scored on the images it was
trained on is over-confident there, so a CRF chosen on them looks useless or is the wrong
one, and a second stage (CRF-as-RNN, joint) scored there can not tell over-fitting from
progress. ``data.holdout`` sets aside a fraction (0 < h < 1, at least one image) or a count
(h >= 1) of the training split, chosen by file name alone (the images with the smallest
CRC-32 of their name), so every run on the same split (a first stage and the second stage
started from it) holds out the same images whatever the list order. The run chooses its CRF
on them (``crf_choice``) and, with ``train.select_every``, keeps its best checkpoint by
their mIoU (early stopping on held-out training images). The evaluation split is never used.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "Best",
    "HeldOut",
    "dataset_names",
    "holdout_count",
    "holdout_indices",
    "split_holdout",
]


def dataset_names(dataset) -> list[str]:
    """The sample names of a dataset (file stems; ``name(i)`` for generated scenes)."""
    names = getattr(dataset, "names", None)
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    if callable(getattr(dataset, "name", None)):
        return [str(dataset.name(i)) for i in range(len(dataset))]
    raise TypeError(f"data.holdout: {type(dataset).__name__} does not name its samples")


def holdout_count(holdout: float, total: int, split: str = "train") -> int:
    """How many of ``total`` images ``data.holdout`` holds out (0 when it is 0)."""
    if holdout < 0 or (holdout >= 1 and holdout != int(holdout)):
        raise ValueError(
            f"data.holdout: expected 0 (off), a fraction 0 < h < 1 or a whole number of "
            f"images, got {holdout!r}"
        )
    if holdout == 0:
        return 0
    count = int(holdout) if holdout >= 1 else max(1, math.floor(holdout * total + 0.5))
    if count >= total:
        raise ValueError(
            f"data.holdout: holding out {count} of the {total} images of split {split!r} "
            "leaves no training image; lower data.holdout"
        )
    return count


def holdout_indices(names: Sequence[str], holdout: float, split: str = "train") -> list[int]:
    """Indices of the held-out images of ``names``: the ``holdout_count`` names with the
    smallest CRC-32 (ties by name), in list order. Duplicate names are an error."""
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"data.holdout: split {split!r} lists {dup} more than once")
    count = holdout_count(holdout, len(names), split)
    ranked = sorted(range(len(names)), key=lambda i: (zlib.crc32(names[i].encode()), names[i]))
    return sorted(ranked[:count])


class HeldOut(Dataset):
    """The items ``indices`` of ``dataset`` (epochs forwarded to it)."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.indices[index]]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch (augmentation draws) to the wrapped dataset."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def names(self) -> list[str]:
        """The names of the items, in order."""
        names = dataset_names(self.dataset)
        return [names[i] for i in self.indices]


def split_holdout(
    train_set, whole_set, holdout: float, split: str = "train"
) -> tuple[Dataset, Dataset | None]:
    """(training images, held-out images) of a split: ``train_set`` (augmented crops) less
    the held-out items, and those items of ``whole_set`` (the same split as whole images).
    Without a holdout: (``train_set``, None)."""
    if not holdout:
        return train_set, None
    names = dataset_names(train_set)
    if dataset_names(whole_set) != names:
        raise ValueError("data.holdout: the training and whole-image datasets list other images")
    held = holdout_indices(names, holdout, split)
    kept = sorted(set(range(len(names))) - set(held))
    return HeldOut(train_set, kept), HeldOut(whole_set, held)


@dataclass
class Best:
    """The best weights so far on the held-out training images (``train.select_every``)."""

    step: int = -1
    miou: float = -math.inf
    model: dict | None = None

    def offer(self, step: int, miou: float, model: nn.Module) -> bool:
        """Keep a copy of ``model``'s weights when ``miou`` beats the best so far (ties keep
        the earlier step); True when kept."""
        if not miou > self.miou:
            return False
        self.step, self.miou = step, miou
        self.model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def to_dict(self) -> dict:
        """The checkpoint's ``best`` entry."""
        return {"step": self.step, "miou": self.miou, "model": self.model}
