"""Colour palettes, colourised label maps and overlays.

Label maps hold class indices with ``255`` = void/ignore. They are written as palette
("P" mode) PNGs, as PASCAL VOC does, so reading one back with PIL gives the indices again
while image viewers show colours.

Palettes (``palette(name)``):

- ``"voc"`` (also ``"context"``, ``"nyud"``, ``"synthetic"`` or an int): the standard
  PASCAL VOC bit-interleaved colour map over all 256 indices; index 255 (void) is the
  conventional VOC void colour (224, 224, 192), the cream outline of VOC annotations.
- ``"cityscapes"``: the 19 official trainId colours; every other index, void 255 included,
  is black, as in the official colourised Cityscapes maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["colorize", "overlay", "palette", "plot_compatibility", "plot_trimap", "save_label_png"]

VOID = 255

_CITYSCAPES_COLOURS = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]  # fmt: skip

_VOC_LIKE = {"voc", "pascal", "context", "pascal_context", "nyud", "nyudv2", "synthetic"}


def _voc_colour_map() -> np.ndarray:
    """PASCAL VOC colour map: bits of the index spread over R, G, B from the top bit down."""
    idx = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    c = idx.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            cmap[:, ch] |= ((c >> ch) & 1) << shift
        c = c >> 3
    return cmap.astype(np.uint8)


def palette(name_or_num_classes: str | int = "voc") -> np.ndarray:
    """A (256, 3) uint8 colour table for a dataset name or a number of classes.

    An int gives the VOC colour map (distinct colours for any number of classes up to 255).
    """
    if isinstance(name_or_num_classes, (int, np.integer)) and not isinstance(
        name_or_num_classes, bool
    ):
        if not 1 <= int(name_or_num_classes) <= 256:
            raise ValueError(f"palette: num_classes must be in 1..256, got {name_or_num_classes}")
        return _voc_colour_map()
    if not isinstance(name_or_num_classes, str):
        raise TypeError(
            f"palette: expected a dataset name or a number of classes, "
            f"got {type(name_or_num_classes).__name__}"
        )
    name = name_or_num_classes.lower()
    if name in _VOC_LIKE:
        return _voc_colour_map()
    if name == "cityscapes":
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(_CITYSCAPES_COLOURS)] = np.array(_CITYSCAPES_COLOURS, dtype=np.uint8)
        return table
    raise ValueError(
        f"palette: unknown palette {name_or_num_classes!r}; expected one of "
        f"{sorted(_VOC_LIKE | {'cityscapes'})} or a number of classes"
    )


def _resolve_palette(pal: str | int | np.ndarray) -> np.ndarray:
    if isinstance(pal, np.ndarray):
        if pal.shape != (256, 3):
            raise ValueError(f"palette: expected an array of shape (256, 3), got {pal.shape}")
        return pal.astype(np.uint8)
    return palette(pal)


def _as_label_array(label) -> np.ndarray:
    """A 2-D uint8 index array; rejects values outside 0..255 instead of wrapping them."""
    if hasattr(label, "detach"):  # torch tensor
        label = label.detach().cpu().numpy()
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise ValueError(f"label: expected a 2-D (H, W) array of class indices, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"label: expected an integer array of class indices, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(
            f"label: class indices must be in 0..255, got range [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.uint8)


def colorize(label, palette: str | int | np.ndarray = "voc") -> Image.Image:
    """A palette ("P" mode) image of ``label``; its pixel values are the class indices."""
    arr = np.ascontiguousarray(_as_label_array(label))
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    img.putpalette(_resolve_palette(palette).reshape(-1).tolist())
    return img


def overlay(
    image_uint8,
    label,
    alpha: float = 0.5,
    palette: str | int | np.ndarray = "voc",
    ignore_index: int | None = VOID,
) -> np.ndarray:
    """Blend label colours onto an (H, W, 3) uint8 image; returns (H, W, 3) uint8.

    ``alpha`` is the weight of the label colour. Pixels equal to ``ignore_index`` keep the
    image colour, so void regions show the photo underneath.
    """
    img = np.asarray(image_uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"image_uint8: expected an (H, W, 3) uint8 array, got {img.shape} {img.dtype}"
        )
    arr = _as_label_array(label)
    if arr.shape != img.shape[:2]:
        raise ValueError(f"label: shape {arr.shape} does not match image {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    colours = _resolve_palette(palette)[arr].astype(np.float32)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * colours
    if ignore_index is not None:
        keep = arr == ignore_index
        out[keep] = img[keep]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_label_png(path: str | Path, label, palette: str | int | np.ndarray = "voc") -> Path:
    """Write ``label`` as a palette PNG (indices preserved); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colorize(label, palette).save(path, format="PNG")
    return path


def plot_trimap(results, path: str | Path, title: str | None = None) -> Path:
    """Trimap curves like DeepLab's Fig. 5: mean IoU and pixel accuracy (%) vs band width.

    ``results`` is one result dict of :func:`deepcrf.evaluation.evaluate_folders` (with a
    ``trimap`` entry) or a dict ``{curve label: result}`` to compare methods. Needs matplotlib.
    """
    plt = _pyplot()
    curves = {"": results} if "trimap" in results else dict(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, res in curves.items():
        if "trimap" not in res:
            raise ValueError(f"results: {label or 'result'} has no trimap scores")
        widths = [float(w) for w in res["trimap"]]
        for ax, key in zip(axes, ("miou", "pixel_acc"), strict=True):
            vals = [
                float("nan") if t[key] is None else 100 * t[key] for t in res["trimap"].values()
            ]
            ax.plot(widths, vals, marker="o", label=label or None)
    for ax, name in zip(axes, ("mean IoU (%)", "pixel accuracy (%)"), strict=True):
        ax.set_xlabel("trimap width (pixels)")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if len(curves) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    return _save_figure(plt, fig, path)


def plot_compatibility(
    matrix, class_names, path: str | Path, title: str | None = "learned compatibility μ"
) -> Path:
    """PNG heatmap of an (L, L) label compatibility, as CRF-as-RNN's Fig. 5.

    Entry (i, j) is μ(i, j), the penalty for label i at a pixel when a similar pixel has
    label j (Potts: -1 on the diagonal, 0 elsewhere; ``DenseCRF.compatibility()`` gives it).
    The colour scale is centred on 0. Needs matplotlib.
    """
    mu = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    names = [str(n) for n in class_names]
    if mu.ndim != 2 or mu.shape[0] != mu.shape[1]:
        raise ValueError(f"matrix: expected a square (L, L) matrix, got shape {mu.shape}")
    if len(names) != mu.shape[0]:
        raise ValueError(f"class_names: expected {mu.shape[0]} names, got {len(names)}")
    if not np.isfinite(mu).all():
        raise ValueError("matrix: contains NaN or infinite values")
    plt = _pyplot()
    size = max(4.0, 0.35 * len(names) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    limit = float(np.abs(mu).max()) or 1.0
    image = ax.imshow(mu, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("label j (neighbour)")
    ax.set_ylabel("label i (pixel)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return _save_figure(plt, fig, path)


def _pyplot():
    """matplotlib.pyplot with a file-only backend (imported on first use: optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'deepcrf[viz]'") from exc
    return plt


def _save_figure(plt, fig, path: str | Path) -> Path:
    """Lay out, write as PNG (creating folders) and close ``fig``; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_search_heatmap(
    miou, rows, cols, path: str | Path, title: str | None = None, best=None
) -> Path:
    """PNG heatmap of mIoU (%) over a CRF search's (σα, σβ) grid (``deepcrf crf-search``).

    ``miou`` is (len(rows), len(cols)) fractions, NaN where a point was not searched; rows
    are σα values, columns σβ values; ``best`` (σα, σβ) is marked. Written atomically.
    """
    from deepcrf.fileio import atomic_write

    values = 100 * np.asarray(miou, dtype=float)
    if values.shape != (len(rows), len(cols)):
        raise ValueError(f"miou: expected shape ({len(rows)}, {len(cols)}), got {values.shape}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(cols) + 2.5), max(3.0, 0.4 * len(rows) + 2)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel("σβ (bilateral_srgb)")
    ax.set_ylabel("σα (bilateral_sxy)")
    if len(rows) <= 12 and len(cols) <= 12:  # small grids: the numbers too
        for i in range(len(rows)):
            for j in range(len(cols)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=7)
    if best is not None and best[0] in rows and best[1] in cols:
        ax.plot(list(cols).index(best[1]), list(rows).index(best[0]), "r*", markersize=14)
    fig.colorbar(image, ax=ax, label="mean IoU (%)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)
