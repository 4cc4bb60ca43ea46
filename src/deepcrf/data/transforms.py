"""Joint image/label transforms and normalisation.

A sample is a dict with ``raw_image`` ((H, W, 3) uint8) and ``label`` ((H, W) int64, 255 =
ignore). Geometric transforms change both with the same geometry; the network input ``image``
is made from ``raw_image`` at the very end (:func:`normalize`), so the three always align.

Every transform is called as ``t(sample, rng)`` with a ``numpy.random.Generator``: datasets
derive that generator from (seed, epoch, index), which makes augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CAFFE_BGR_MEAN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "normalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)  # VGG-16/DeepLab Caffe models, BGR order, 0..255
IGNORE = 255


def normalize(raw_image: np.ndarray, mode: str | dict | None = "imagenet") -> torch.Tensor:
    """The float32 (3, H, W) network input from an (H, W, 3) uint8 RGB image.

    ``"imagenet"``: RGB scaled to [0, 1], minus ImageNet mean, divided by std.
    ``"caffe"``: channels reordered to BGR, 0..255, minus :data:`CAFFE_BGR_MEAN`.
    ``None``: RGB scaled to [0, 1].
    A dict ``{"mode": "caffe", "mean": [b, g, r]}`` gives Caffe's convention with another
    mean (converted models record theirs: CRF-as-RNN's differs in the third decimal), and
    ``{"mode": "imagenet", "mean": [...], "std": [...]}`` the same for the RGB convention.
    """
    mode, mean, std = _normalize_mode(mode)
    raw = np.asarray(raw_image)
    if raw.ndim != 3 or raw.shape[2] != 3 or raw.dtype != np.uint8:
        raise ValueError(f"raw_image: expected (H, W, 3) uint8, got {raw.shape} {raw.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(raw)).permute(2, 0, 1).to(torch.float32)
    if mode == "imagenet":
        mean_t = torch.tensor(mean or IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std_t = torch.tensor(std or IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        return (x / 255.0 - mean_t) / std_t
    if mode == "caffe":
        return x.flip(0) - torch.tensor(mean or CAFFE_BGR_MEAN, dtype=torch.float32).view(3, 1, 1)
    return x / 255.0


def _normalize_mode(mode) -> tuple[str | None, tuple | None, tuple | None]:
    """Validate a ``normalize`` mode: (name, mean or None, std or None)."""
    expected = "'imagenet', 'caffe', None or a dict {'mode': ..., 'mean': [3 numbers]}"
    if mode is None or mode in ("imagenet", "caffe"):
        return mode, None, None
    if not isinstance(mode, dict) or mode.get("mode") not in ("imagenet", "caffe"):
        raise ValueError(f"normalize: mode must be {expected}, got {mode!r}")
    unknown = set(mode) - {"mode", "mean", "std"}
    if unknown or (mode["mode"] == "caffe" and "std" in mode):
        raise ValueError(f"normalize: unknown keys in {mode!r}; expected {expected}")
    values = []
    for key in ("mean", "std"):
        v = mode.get(key)
        if v is not None:
            ok = isinstance(v, (list, tuple)) and len(v) == 3
            ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            if not ok or (key == "std" and not all(x > 0 for x in v)):
                raise ValueError(f"normalize: {key} must be 3 numbers, got {v!r}")
            v = tuple(float(x) for x in v)
        values.append(v)
    return mode["mode"], values[0], values[1]


def _resize_pair(sample: dict, height: int, width: int) -> dict:
    """Bilinear for the image, nearest neighbour for the label (class ids never mix)."""
    out = dict(sample)
    img = Image.fromarray(sample["raw_image"])
    out["raw_image"] = np.asarray(img.resize((width, height), Image.BILINEAR))
    if "label" in sample:
        lab = sample["label"]
        resized = Image.fromarray(lab.astype(np.int32)).resize((width, height), Image.NEAREST)
        out["label"] = np.asarray(resized).astype(np.int64)
    return out


class Compose:
    """Apply transforms in order, sharing one random generator."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class RandomScale:
    """Resize by a factor drawn uniformly from ``[low, high]`` (DeepLab 0.5-1.5, Lin 0.7-1.2)."""

    def __init__(self, low: float = 0.5, high: float = 1.5) -> None:
        if not 0 < low <= high:
            raise ValueError(f"RandomScale: need 0 < low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        s = rng.uniform(self.low, self.high)
        h, w = sample["raw_image"].shape[:2]
        return _resize_pair(sample, max(1, round(h * s)), max(1, round(w * s)))


class Resize:
    """Resize to a fixed (height, width)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        return _resize_pair(sample, *self.size)


def _pad_to(sample: dict, height: int, width: int, fill: Sequence[int]) -> dict:
    """Pad bottom/right up to at least (height, width): image with ``fill``, label with 255."""
    h, w = sample["raw_image"].shape[:2]
    ph, pw = max(0, height - h), max(0, width - w)
    if ph == 0 and pw == 0:
        return sample
    out = dict(sample)
    img = np.empty((h + ph, w + pw, 3), dtype=np.uint8)
    img[:] = np.asarray(fill, dtype=np.uint8)
    img[:h, :w] = sample["raw_image"]
    out["raw_image"] = img
    if "label" in sample:
        lab = np.full((h + ph, w + pw), IGNORE, dtype=np.int64)
        lab[:h, :w] = sample["label"]
        out["label"] = lab
    return out


def _crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    out = dict(sample)
    out["raw_image"] = sample["raw_image"][top : top + height, left : left + width].copy()
    if "label" in sample:
        out["label"] = sample["label"][top : top + height, left : left + width].copy()
    return out


class RandomCrop:
    """Random (height, width) crop, padding first (label with 255, image with ``fill``).

    ``fill`` defaults to the ImageNet mean colour, which normalises to zero.
    """

    def __init__(self, size: int | tuple[int, int], fill: Sequence[int] = (124, 116, 104)):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.fill = fill

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        ch, cw = self.size
        sample = _pad_to(sample, ch, cw, self.fill)
        h, w = sample["raw_image"].shape[:2]
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        return _crop(sample, top, left, ch, cw)


class CenterCrop(RandomCrop):
    """Deterministic central crop (with the same padding rule), for evaluation."""

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        ch, cw = self.size
        sample = _pad_to(sample, ch, cw, self.fill)
        h, w = sample["raw_image"].shape[:2]
        return _crop(sample, (h - ch) // 2, (w - cw) // 2, ch, cw)


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        out["raw_image"] = sample["raw_image"][:, ::-1].copy()
        if "label" in sample:
            out["label"] = sample["label"][:, ::-1].copy()
        return out
