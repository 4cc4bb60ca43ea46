"""Evaluate folders of predicted label maps against ground truth (used by ``deepcrf eval``).

Predictions and ground truth are index PNGs (palette or greyscale) matched by file stem.
Every listed name needs both files; sizes must agree; ground-truth values must be class ids
``< num_classes`` or ``ignore_index``. Any violation raises an error naming the file(s).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .data.io import read_label
from .data.lists import read_list
from .fileio import files_by_stem
from .metrics import ConfusionMatrix, TrimapConfusion

__all__ = ["evaluate_folders", "match_label_files", "scores_result", "width_key"]


def _pngs(folder: Path, what: str) -> dict[str, Path]:
    files = files_by_stem(folder, (".png",), what)  # two maps with one stem: an error
    if not files:
        raise ValueError(f"{what}: no .png label maps in {folder}")
    return files


def _gt_folder(gt: Path, split: str | None) -> tuple[Path, list[str] | None]:
    """A folder of PNGs as is; a VOC tree -> its SegmentationClass and the split's names."""
    if gt.is_dir() and any(p.suffix.lower() == ".png" for p in gt.iterdir()):
        return gt, None
    from .data.voc import find_voc_root

    try:
        voc = find_voc_root(gt)
    except FileNotFoundError:
        return gt, None
    names = None
    if split is not None:
        names = [r[0] for r in read_list(voc / "ImageSets" / "Segmentation" / f"{split}.txt")]
    return voc / "SegmentationClass", names


def match_label_files(
    pred_dir: str | Path,
    gt_dir: str | Path,
    names: Sequence[str] | None = None,
    split: str | None = None,
    strict: bool = False,
) -> list[tuple[str, Path, Path]]:
    """(name, prediction, ground truth) triples; raises listing unmatched names.

    ``gt_dir`` may also be a VOC tree (its ``SegmentationClass``; ``split`` picks the names).
    Without ``names``, every prediction is scored and must have a ground truth; ground-truth
    files without a prediction (e.g. the train images of a full SegmentationClass folder)
    are reported with a warning, or raise with ``strict``. Named entries must have both.
    """
    gt_path, split_names = _gt_folder(Path(gt_dir), split)
    preds = _pngs(Path(pred_dir), "pred")
    gts = _pngs(gt_path, "gt")
    wanted = list(names) if names is not None else split_names
    if wanted is not None:
        no_pred = [n for n in wanted if n not in preds]
        no_gt = [n for n in wanted if n not in gts]
    else:
        no_pred = sorted(set(gts) - set(preds))
        no_gt = sorted(set(preds) - set(gts))
        wanted = sorted(preds)
        if no_pred and not strict and not no_gt:
            warnings.warn(
                f"{len(no_pred)} ground-truth maps in {gt_path} have no prediction in "
                f"{pred_dir} and are not scored (first: {no_pred[:5]}); scoring the "
                f"{len(wanted)} predicted images",
                UserWarning,
                stacklevel=2,
            )
            no_pred = []
    problems = []
    if no_gt:
        problems.append(f"{len(no_gt)} with no ground truth in {gt_path}: {no_gt[:10]}")
    if no_pred:
        problems.append(f"{len(no_pred)} with no prediction in {pred_dir}: {no_pred[:10]}")
    if problems:
        raise FileNotFoundError(
            "unmatched label maps: " + "; ".join(problems) + " (use --list to evaluate a subset)"
        )
    if not wanted:
        raise ValueError("names: nothing to evaluate")
    return [(n, preds[n], gts[n]) for n in wanted]


def width_key(w: float) -> str:
    """JSON key of a trimap width: "3" for 3.0, "2.5" for 2.5."""
    return str(int(w)) if float(w).is_integer() else str(w)


def _named(values: list, classes: Sequence[str]) -> dict:
    return {c: v for c, v in zip(classes, values, strict=True)}


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    trimap: Sequence[float] = (),
    trimap_rule: str = "auto",
    classes: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    split: str | None = None,
    progress: bool = True,
    strict: bool = False,
    ignore_pred_void: bool = False,
) -> dict:
    """Scores over all matched pairs, as fractions in [0, 1] (see :mod:`deepcrf.metrics`).

    Per-class dicts are keyed by class name (``classes``, default "0".."K-1").
    ``ignore_pred_void`` leaves out pixels the prediction marks ``ignore_index`` (uncertain
    pseudo-labels), as WSSS papers score pseudo-labels; ``pred_void_fraction`` is the share
    of labelled ground-truth pixels left out that way.
    """
    if classes is None:
        classes = [str(k) for k in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"classes: got {len(classes)} names for {num_classes} classes")
    pairs = match_label_files(pred_dir, gt_dir, names, split, strict)
    cm = ConfusionMatrix(num_classes, ignore_index)
    tri = TrimapConfusion(num_classes, trimap, ignore_index, trimap_rule) if trimap else None
    labelled = left_out = 0
    for _name, pred_path, gt_path in tqdm(pairs, desc="eval", unit="img", disable=not progress):
        gt = read_label(gt_path)
        pred = read_label(pred_path)
        if ignore_pred_void and pred.shape == gt.shape:
            void, counted = pred == ignore_index, gt != ignore_index
            labelled += int(counted.sum())
            left_out += int((void & counted).sum())
            gt[void] = ignore_index
        label = f"{pred_path.name} (gt {gt_path})"
        cm.update(pred, gt, name=label)
        if tri is not None:
            tri.update(pred, gt, name=label)
    void = (left_out, labelled) if ignore_pred_void else None
    return scores_result(cm, tri, classes, len(pairs), pred_void=void)


def scores_result(
    cm: ConfusionMatrix,
    tri: TrimapConfusion | None,
    classes: Sequence[str],
    num_images: int,
    pred_void: tuple[int, int] | None = None,
) -> dict:
    """The ``deepcrf eval`` JSON result of accumulated matrices (fractions in [0, 1]).

    ``pred_void`` = (labelled pixels the predictions marked void, labelled pixels), reported
    as ``pred_void_pixels`` / ``pred_void_fraction`` when given."""
    s = cm.scores()
    out = {
        "num_images": num_images,
        "num_classes": cm.num_classes,
        "ignore_index": cm.ignore_index,
        "classes": list(classes),
        "miou": s["miou"],
        "pixel_acc": s["pixel_acc"],
        "mean_acc": s["mean_acc"],
        "fw_iou": s["fw_iou"],
        "iou": _named(s["iou"], classes),
        "acc": _named(s["acc"], classes),
        "gt_pixels": _named(s["gt_pixels"], classes),
        "num_pixels": s["num_pixels"],
        "confusion": cm.mat.tolist(),
    }
    if pred_void is not None:
        left_out, labelled = pred_void
        out["pred_void_pixels"] = left_out
        out["pred_void_fraction"] = left_out / labelled if labelled else None
    if tri is not None:
        out["trimap_rule"] = tri.rule
        out["trimap"] = {}
        for w, ts in tri.scores().items():
            out["trimap"][width_key(w)] = {
                "miou": ts["miou"],
                "pixel_acc": ts["pixel_acc"],
                "mean_acc": ts["mean_acc"],
                "fw_iou": ts["fw_iou"],
                "iou": _named(ts["iou"], classes),
                "num_pixels": ts["num_pixels"],
            }
    return out


def format_table(result: dict) -> str:
    """A readable table in percentages: per class, the means, and the trimap rows."""

    def pct(v) -> str:
        return "     -" if v is None else f"{100 * v:6.2f}"

    width = max(10, *(len(c) for c in result["classes"]))
    lines = [f"{'class':<{width}}  {'IoU %':>6}  {'acc %':>6}  {'pixels':>10}"]
    for c in result["classes"]:
        lines.append(
            f"{c:<{width}}  {pct(result['iou'][c])}  {pct(result['acc'][c])}  "
            f"{result['gt_pixels'][c]:>10d}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(
        f"mIoU {pct(result['miou'])}   pixel acc {pct(result['pixel_acc'])}   "
        f"mean acc {pct(result['mean_acc'])}   fw IoU {pct(result['fw_iou'])}   "
        f"({result['num_images']} images)"
    )
    if result.get("pred_void_pixels") is not None:
        lines.append(
            f"left out: {result['pred_void_pixels']} labelled pixels "
            f"({pct(result['pred_void_fraction'])} %) marked void in the predictions"
        )
    if "trimap" in result:
        lines.append(f"trimap ({result['trimap_rule']} rule)   width   mIoU %   pixel acc %")
        for w, t in result["trimap"].items():
            lines.append(f"{'':<22}{w:>5}   {pct(t['miou'])}   {pct(t['pixel_acc'])}")
    return "\n".join(lines)
