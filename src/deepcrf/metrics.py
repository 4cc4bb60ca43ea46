"""Segmentation metrics from one dataset-level confusion matrix, and DeepLab's trimap.

Definitions (``C`` is the K x K int64 confusion matrix, rows = ground truth, columns =
prediction, pixels whose ground truth is ``ignore_index`` are never counted):

- ``gt_pixels[k] = C[k, :].sum()``; class ``k`` is *present* when ``gt_pixels[k] > 0``.
- ``iou[k] = C[k, k] / (C[k, :].sum() + C[:, k].sum() - C[k, k])``; ``None`` (JSON null)
  when the denominator is 0 (class neither in the ground truth nor predicted). A class that is
  predicted but absent from the ground truth has ``iou = 0.0`` but is *not* averaged.
- ``acc[k] = C[k, k] / gt_pixels[k]``; ``None`` for absent classes.
- ``miou`` = mean of ``iou[k]`` over present classes; ``mean_acc`` = mean of ``acc[k]`` over
  present classes; ``pixel_acc = trace(C) / C.sum()``;
  ``fw_iou = sum_k (gt_pixels[k] / C.sum()) * iou[k]`` over present classes.
  With no counted pixel at all every score is ``None``.

Trimap (Chen et al. 2015, Fig. 5): the same scores restricted to a band of width ``w``:

- ``"void"`` rule: non-void pixels whose Euclidean distance (between pixel centres) to the
  nearest void pixel is ``<= w``. This is DeepLab's rule on PASCAL VOC, whose annotations
  outline every object with a void band.
- ``"boundary"`` rule, for ground truth without void bands: non-void pixels whose Euclidean
  distance to the nearest *boundary pixel* is ``<= w``; a boundary pixel is one whose label
  differs from at least one of its 4-connected neighbours (labels compared as they are, void
  included), so both sides of an edge are boundary pixels (distance 0).
- ``"auto"`` (default): the void rule if any ground-truth pixel of the whole evaluation is
  void, else the boundary rule; decided once for the dataset, never per image.

Distances are exact (squared distances compared as integers), computed by a separable
Euclidean distance transform in torch; scipy is not needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "ConfusionMatrix",
    "TrimapConfusion",
    "boundary_mask",
    "confusion_matrix",
    "scores_from_confusion",
    "squared_distance_to",
    "trimap_mask",
]

TRIMAP_MODES = ("auto", "void", "boundary")


def _as_long_tensor(x, what: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(f"{what}: expected integer class indices, got dtype {arr.dtype}")
        t = torch.from_numpy(arr.astype(np.int64, copy=False))
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{what}: expected integer class indices, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def _check_pair(
    pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int | None, name: str
) -> None:
    where = f" in {name}" if name else ""
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction and ground truth sizes differ{where}: "
            f"pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}"
        )
    bad_gt = (gt < 0) | (gt >= num_classes)
    if ignore_index is not None:
        bad_gt &= gt != ignore_index
    if bool(bad_gt.any()):
        vals = torch.unique(gt[bad_gt])[:10].tolist()
        raise ValueError(
            f"ground truth{where} has label values {vals} outside 0..{num_classes - 1} "
            f"that are not the ignore index {ignore_index}"
        )
    # Predictions are only checked where they are scored: a prediction copied from the ground
    # truth may keep 255 on void pixels, but every labelled pixel needs a real class.
    bad_pred = (pred < 0) | (pred >= num_classes)
    if ignore_index is not None:
        bad_pred &= gt != ignore_index
    if bool(bad_pred.any()):
        vals = torch.unique(pred[bad_pred])[:10].tolist()
        raise ValueError(
            f"prediction{where} has label values {vals} outside 0..{num_classes - 1} "
            "at labelled (non-void) pixels"
        )


def confusion_matrix(
    pred,
    gt,
    num_classes: int,
    ignore_index: int | None = 255,
    mask=None,
    name: str = "",
) -> torch.Tensor:
    """K x K int64 matrix (rows = gt, cols = pred) counting pixels with gt != ignore_index.

    ``mask`` (bool, same shape) further restricts the counted pixels; ``name`` is used in
    error messages (e.g. the file being evaluated).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    gt_t = _as_long_tensor(gt, "gt")
    pred_t = _as_long_tensor(pred, "pred", gt_t.device)
    _check_pair(pred_t, gt_t, num_classes, ignore_index, name)
    keep = torch.ones_like(gt_t, dtype=torch.bool)
    if ignore_index is not None:
        keep = gt_t != ignore_index
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.shape != gt_t.shape:
            raise ValueError(f"mask: shape {tuple(m.shape)} does not match gt {tuple(gt_t.shape)}")
        keep &= m.to(device=gt_t.device, dtype=torch.bool)
    idx = gt_t[keep] * num_classes + pred_t[keep]
    counts = torch.bincount(idx, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio_or_none(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def scores_from_confusion(conf) -> dict:
    """pixel_acc, mean_acc, miou, fw_iou and per-class iou/acc/gt_pixels (module docstring)."""
    c = torch.as_tensor(conf).to(torch.float64).cpu()
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"conf: expected a square K x K matrix, got {tuple(c.shape)}")
    tp = torch.diagonal(c)
    gt_pix = c.sum(1)
    pred_pix = c.sum(0)
    union = gt_pix + pred_pix - tp
    total = float(c.sum())
    present = gt_pix > 0
    iou_t = torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(tp))
    acc_t = torch.where(present, tp / gt_pix.clamp_min(1), torch.zeros_like(tp))
    iou = [float(iou_t[k]) if union[k] > 0 else None for k in range(c.shape[0])]
    acc = [float(acc_t[k]) if present[k] else None for k in range(c.shape[0])]
    n_present = int(present.sum())
    return {
        "pixel_acc": _ratio_or_none(float(tp.sum()), total),
        "mean_acc": float(acc_t[present].sum()) / n_present if n_present else None,
        "miou": float(iou_t[present].sum()) / n_present if n_present else None,
        "fw_iou": float((gt_pix * iou_t)[present].sum()) / total if total else None,
        "iou": iou,
        "acc": acc,
        "gt_pixels": [int(v) for v in gt_pix.tolist()],
        "num_pixels": int(total),
    }


class ConfusionMatrix:
    """Accumulates a dataset-level confusion matrix; mergeable across workers/processes."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred, gt, mask=None, name: str = "") -> ConfusionMatrix:
        """Add one prediction/ground-truth pair (any shape, same for both)."""
        gt_t = _as_long_tensor(gt, "gt", self.mat.device)
        self.mat += confusion_matrix(pred, gt_t, self.num_classes, self.ignore_index, mask, name)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of another matrix with the same number of classes."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"other: cannot merge {other.num_classes} classes into {self.num_classes}"
            )
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all torch.distributed processes (no-op when not initialised)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat, op=torch.distributed.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        self.mat.zero_()

    def scores(self) -> dict:
        return scores_from_confusion(self.mat)


def squared_distance_to(features, max_distance: float | None = None) -> torch.Tensor:
    """Exact squared Euclidean distance from each pixel to the nearest True pixel of a 2-D mask.

    int64 result. With ``max_distance`` the horizontal pass only looks that far, so distances
    ``<= max_distance`` are exact and larger ones are only guaranteed to exceed it. Pixels with
    no feature in reach get a huge sentinel (> any real squared distance).
    """
    f = torch.as_tensor(features).to(torch.bool)
    if f.ndim != 2:
        raise ValueError(f"features: expected a 2-D mask, got shape {tuple(f.shape)}")
    h, w = f.shape
    big = (h + w + 1) ** 2 * 4
    if h == 0 or w == 0:
        return torch.zeros(h, w, dtype=torch.int64, device=f.device)
    dtype = torch.int32 if big < 2**30 else torch.int64  # int32 halves the memory traffic
    # Vertical pass: distance to the nearest feature in the same column (above or below).
    rows = torch.arange(h, device=f.device, dtype=dtype).unsqueeze(1).expand(h, w)
    neg = torch.full_like(rows, -(h + w + 1) * 2)
    above = torch.cummax(torch.where(f, rows, neg), dim=0).values  # last feature row <= i
    flipped = torch.where(f.flip(0), rows, neg)
    below = (h - 1) - torch.cummax(flipped, dim=0).values.flip(0)  # first feature row >= i
    dv = torch.minimum(rows - above, below - rows)
    g2 = torch.where(dv <= h, dv * dv, torch.full_like(dv, big))
    # Horizontal pass: min over columns j' of g2[i, j'] + (j - j')^2, within the reach.
    # Once off^2 exceeds every current value no farther column can improve any pixel.
    reach = w - 1 if max_distance is None else min(w - 1, int(np.floor(max_distance)))
    out = g2.clone()
    tmp = torch.empty_like(g2)
    for off in range(1, reach + 1):
        cost = off * off
        if off % 8 == 1 and cost >= int(out.max()):
            break
        torch.add(g2[:, :-off], cost, out=tmp[:, off:])
        torch.minimum(out[:, off:], tmp[:, off:], out=out[:, off:])
        torch.add(g2[:, off:], cost, out=tmp[:, :-off])
        torch.minimum(out[:, :-off], tmp[:, :-off], out=out[:, :-off])
    return out.clamp_max(big).to(torch.int64)


def boundary_mask(label) -> torch.Tensor:
    """Pixels whose label differs from at least one 4-connected neighbour."""
    t = _as_long_tensor(label, "label")
    b = torch.zeros_like(t, dtype=torch.bool)
    dy = t[1:, :] != t[:-1, :]
    dx = t[:, 1:] != t[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


def trimap_mask(gt, width: float, ignore_index: int = 255, mode: str = "void") -> torch.Tensor:
    """Bool mask of the non-void pixels within ``width`` of void ("void") or a label boundary
    ("boundary"); see the module docstring for the exact rules."""
    return _trimap_masks(_as_long_tensor(gt, "gt"), [width], ignore_index, mode)[0]


def _band_distances(gt: torch.Tensor, reach: float, ignore_index: int, mode: str):
    """Squared distance of every pixel to the rule's features (void or boundary pixels)."""
    if mode not in ("void", "boundary"):
        raise ValueError(f"mode: expected 'void' or 'boundary', got {mode!r}")
    features = gt == ignore_index if mode == "void" else boundary_mask(gt)
    return squared_distance_to(features, reach)


def _squared_limit(w: float) -> int:
    """d2 <= w^2 for an integer d2 is d2 <= floor(w^2): compare integers, exactly."""
    return int(np.floor(float(w) * float(w)))


def _trimap_masks(
    gt: torch.Tensor, widths: Sequence[float], ignore_index: int, mode: str
) -> list[torch.Tensor]:
    for w in widths:
        if not w >= 0:
            raise ValueError(f"width: trimap widths must be >= 0, got {w}")
    d2 = _band_distances(gt, max(widths) if widths else 0, ignore_index, mode)
    valid = gt != ignore_index
    return [valid & (d2 <= _squared_limit(w)) for w in widths]


class TrimapConfusion:
    """Confusion matrices restricted to trimap bands of several widths (one per width)."""

    def __init__(
        self,
        num_classes: int,
        widths: Iterable[float],
        ignore_index: int = 255,
        mode: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        if mode not in TRIMAP_MODES:
            raise ValueError(f"mode: expected one of {TRIMAP_MODES}, got {mode!r}")
        self.widths = [float(w) for w in widths]
        if not self.widths:
            raise ValueError("widths: expected at least one trimap width")
        for w in self.widths:
            if not w >= 0:
                raise ValueError(f"widths: trimap widths must be >= 0, got {w}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mode = mode
        self.seen_void = False
        self.void = [ConfusionMatrix(num_classes, ignore_index, device) for _ in self.widths]
        self.boundary = [ConfusionMatrix(num_classes, ignore_index, device) for _ in self.widths]

    def update(self, pred, gt, name: str = "") -> TrimapConfusion:
        gt_t = _as_long_tensor(gt, "gt", self.void[0].mat.device)
        pred_t = _as_long_tensor(pred, "pred", gt_t.device)
        _check_pair(pred_t, gt_t, self.num_classes, self.ignore_index, name)
        has_void = bool((gt_t == self.ignore_index).any())
        self.seen_void |= has_void
        rules = []
        if self.mode in ("auto", "void") and has_void:
            rules.append(("void", self.void))
        if self.mode == "boundary" or (self.mode == "auto" and not self.seen_void):
            rules.append(("boundary", self.boundary))
        if not rules:
            return self
        # one pass: pair codes of the labelled pixels, then one bincount per width
        k = self.num_classes
        valid = gt_t != self.ignore_index
        codes = gt_t[valid] * k + pred_t[valid]
        for rule, matrices in rules:
            d2 = _band_distances(gt_t, max(self.widths), self.ignore_index, rule)[valid]
            for cm, w in zip(matrices, self.widths, strict=True):
                sel = codes[d2 <= _squared_limit(w)]
                cm.mat += torch.bincount(sel, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: TrimapConfusion) -> TrimapConfusion:
        if other.widths != self.widths or other.mode != self.mode:
            raise ValueError("other: trimap widths and mode must match to merge")
        self.seen_void |= other.seen_void
        for a, b in zip(self.void + self.boundary, other.void + other.boundary, strict=True):
            a.merge(b)
        return self

    def all_reduce(self) -> TrimapConfusion:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([int(self.seen_void)], device=self.void[0].mat.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.seen_void = bool(flag.item())
            for cm in self.void + self.boundary:
                cm.all_reduce()
        return self

    @property
    def rule(self) -> str:
        """The rule in effect: "void" or "boundary" (``auto`` resolved on the data seen)."""
        if self.mode == "auto":
            return "void" if self.seen_void else "boundary"
        return self.mode

    def matrices(self) -> dict[float, torch.Tensor]:
        chosen = self.void if self.rule == "void" else self.boundary
        return {w: cm.mat for w, cm in zip(self.widths, chosen, strict=True)}

    def scores(self) -> dict[float, dict]:
        return {w: scores_from_confusion(m) for w, m in self.matrices().items()}
