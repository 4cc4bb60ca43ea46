"""Reading images and label maps with clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "read_image", "read_label"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc}") from exc
    return img


def read_image(path: str | Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array (greyscale/RGBA/palette images are converted)."""
    img = _open(path, "image")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_label(path: str | Path) -> np.ndarray:
    """An (H, W) int64 array of class indices.

    Palette ("P") PNGs give their indices directly (PASCAL VOC); greyscale ("L", "I;16", "I")
    images give their values. Colour (RGB) label images are rejected rather than guessed.
    """
    img = _open(path, "label")
    if img.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I", "1"):
        return np.asarray(img, dtype=np.int64).copy()
    raise ValueError(
        f"label: {path} has image mode {img.mode!r}; expected a palette ('P') or greyscale "
        "('L') PNG of class indices"
    )
