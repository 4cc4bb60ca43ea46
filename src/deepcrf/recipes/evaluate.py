"""Evaluate a trained model on a dataset split, with or without the dense CRF after it.

The result has the keys of ``deepcrf eval`` on folders (``deepcrf.evaluation.scores_result``:
miou, pixel_acc, mean_acc, fw_iou, iou, ..., trimap), so both forms of the command can be
compared directly. ``save_probs`` writes each image's network softmax (L, H, W) float32 as
``<stem>.npy`` (what ``deepcrf crf-search --probs`` reads), atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation import scores_result
from ..fileio import atomic_write
from ..metrics import ConfusionMatrix, TrimapConfusion
from ..params import CRFParams
from .predict import LoadedRun, crf_refine, iterate_dataset, model_probabilities

__all__ = ["evaluate_model"]


def evaluate_model(
    run: LoadedRun,
    dataset,
    crf: CRFParams | None = None,
    trimap: Sequence[float] = (),
    trimap_rule: str = "auto",
    classes: Sequence[str] | None = None,
    save_probs: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    limit: int | None = None,
) -> dict:
    """Scores of ``run.model`` (+ the dense CRF with ``crf``) on ``dataset``'s labels.

    Models that end in their own trained CRF (``run.has_own_crf``) are scored as they are;
    ``crf`` is not applied a second time.
    """
    num_classes = run.num_classes
    if classes is None:
        classes = [str(k) for k in range(num_classes)]
    cm = ConfusionMatrix(num_classes, 255)
    tri = TrimapConfusion(num_classes, trimap, 255, trimap_rule) if trimap else None
    out_dir = Path(save_probs) if save_probs is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    apply_crf = crf is not None and not run.has_own_crf
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = iterate_dataset(dataset, range(count))
    for name, raw, label in tqdm(items, total=count, desc="eval", unit="img", disable=not progress):
        if label is None:
            raise ValueError(f"dataset: image {name} has no label to evaluate against")
        probs = model_probabilities(run.model, raw, device)
        if out_dir is not None:
            atomic_write(out_dir / f"{name}.npy", lambda tmp, p=probs: np.save(tmp, p))
        if apply_crf:
            probs = crf_refine(probs, raw, crf)
        pred = probs.argmax(0)
        cm.update(pred, label, name=name)
        if tri is not None:
            tri.update(pred, label, name=name)
    return scores_result(cm, tri, classes, count)
