"""Reading images and label maps with clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "MAX_8BIT_LABELS", "read_image", "read_label", "write_label"]

#: Label maps with at most this many classes (ids 0..254) are written as 8-bit palette PNGs;
#: 255 is reserved for void/ignore, so 256 or more classes are written as 16-bit PNGs.
MAX_8BIT_LABELS = 255

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
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (or 32-bit) greyscale: scale to 0..255 instead of saturating at 255
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if img.mode in ("I", "F") and values.max(initial=0) > 65535:
            top = float(values.max())
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
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


def write_label(path: str | Path, labels: np.ndarray, palette: str = "voc") -> Path:
    """Write class indices as a PNG: 8-bit palette when every id is < ``MAX_8BIT_LABELS``
    (255 stays void), else 16-bit greyscale (ids up to 65535). ``path`` gets the PNG as is
    (use ``deepcrf.fileio.atomic_write`` around it for an atomic output)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels: expected an (H, W) label map, got shape {labels.shape}")
    high = int(labels.max(initial=0))
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"labels: negative class ids cannot be written to {path}")
    if high < MAX_8BIT_LABELS:
        from deepcrf.viz import save_label_png

        return save_label_png(path, labels.astype(np.uint8), palette)
    if high > 65535:
        raise ValueError(f"labels: class id {high} does not fit a 16-bit PNG ({path})")
    Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG")
    return Path(path)
