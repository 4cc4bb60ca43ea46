"""The ``data`` section of a run turned into datasets, samplers and loaders.

Training samples are random crops (with optional scale and flip augmentation, reproducible
from (seed, epoch, index)); evaluation samples are whole images. ``ResumableSampler`` is a
``DistributedSampler`` that can start part-way into an epoch, so a resumed run sees exactly
the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data import transforms as T
from .config import DataConfig

__all__ = [
    "ResumableSampler",
    "build_dataset",
    "dataset_num_classes",
    "eval_indices",
    "train_loader",
]


def _voc_classes_file(root: str) -> Path | None:
    from ..data.voc import find_voc_root

    path = find_voc_root(root) / "classes.txt"
    return path if path.is_file() else None


def _require_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise ValueError(f"data.root: the {cfg.dataset} dataset needs a root (--data-root DIR)")
    root = Path(cfg.root)
    if not root.exists():
        raise FileNotFoundError(f"data.root: no such folder {root} (--data-root)")
    return root


def dataset_num_classes(cfg: DataConfig) -> int:
    """The number of classes the dataset defines (VOC trees: classes.txt if present, else 21)."""
    from ..data import SYNTHETIC_CLASSES, VOCSegmentation
    from ..data.cityscapes import Cityscapes

    if cfg.dataset == "voc":
        classes = _voc_classes_file(str(_require_root(cfg)))
        if classes is not None:
            names = [ln for ln in classes.read_text().splitlines() if ln.strip()]
            if names:
                return len(names)
        return VOCSegmentation.num_classes
    if cfg.dataset == "cityscapes":
        return Cityscapes.num_classes
    if cfg.dataset == "synthetic":
        return len(SYNTHETIC_CLASSES)
    classes = _require_root(cfg) / "classes.txt"
    if classes.is_file():
        return len([ln for ln in classes.read_text().splitlines() if ln.strip()])
    raise ValueError(
        "model.num_classes: the folder dataset needs it (or a classes.txt in data.root)"
    )


def _train_transform(cfg: DataConfig) -> T.Compose:
    steps: list = []
    if (cfg.scale_min, cfg.scale_max) != (1.0, 1.0):
        steps.append(T.RandomScale(cfg.scale_min, cfg.scale_max))
    steps.append(T.RandomCrop(cfg.crop_size))
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps)


def build_dataset(
    cfg: DataConfig,
    split: str,
    num_classes: int,
    train: bool,
    normalize: str | None = "imagenet",
    seed: int = 0,
) -> Dataset:
    """The dataset of ``split``: random crops for training, whole images otherwise."""
    transform = _train_transform(cfg) if train else None
    common = {"transform": transform, "normalize": normalize}
    if cfg.dataset == "synthetic":
        from ..data import SyntheticScenes

        n = cfg.synthetic_train if split == cfg.train_split else cfg.synthetic_val
        offset = 0 if split == cfg.train_split else 1_000_003
        h, w = (int(v) for v in cfg.synthetic_size)
        return SyntheticScenes(
            n, (h, w), num_classes=min(num_classes, 7), seed=seed + offset, **common
        )
    root = _require_root(cfg)
    if cfg.dataset == "voc":
        from ..data import VOCSegmentation

        return VOCSegmentation(root, split, num_classes=num_classes, seed=seed, **common)
    if cfg.dataset == "cityscapes":
        from ..data.cityscapes import Cityscapes

        return Cityscapes(root, split, seed=seed, **common)
    from ..data import FolderSegmentation

    list_file = root / f"{split}.txt"
    return FolderSegmentation(
        root / cfg.images,
        root / cfg.masks,
        num_classes,
        list_file=list_file if list_file.is_file() else None,
        seed=seed,
        **common,
    )


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after ``start`` of this rank's indices."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Epoch ``epoch``, skipping the first ``start`` indices of this rank."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def _collate(samples: list[dict]) -> dict:
    out = {"name": [s["name"] for s in samples]}
    for key in ("image", "raw_image", "label"):
        if key in samples[0]:
            out[key] = torch.stack([s[key] for s in samples])
    return out


def train_loader(
    dataset: Dataset, sampler: ResumableSampler, batch_size: int, workers: int
) -> DataLoader:
    """Loader of fixed-size training crops; its own generator leaves the global RNG alone
    (so dropout draws do not depend on when an epoch's iterator was created)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )


def eval_indices(n: int, rank: int, world: int, limit: int | None = None) -> list[int]:
    """This rank's share of the first ``limit`` (or all ``n``) items, without padding."""
    count = n if limit is None else min(n, limit)
    return list(range(rank, count, world))
