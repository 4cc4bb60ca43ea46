"""``fit``: the dense CRF's parameters by gradient descent instead of a grid.

The CRF runs as ``deepcrf.nn.DenseCRF`` with ``learn_bandwidths`` (Schwing & Urtasun 2015)
on the network's fixed probabilities (unaries log(max(p, 1e-5)), as refine() takes them) and
Adam minimises the cross-entropy of the mean-field marginals against the ground truth (void
ignored), one image per step in a seeded order. Learned: the 7 bandwidths (σγ per axis,
σα per axis, σβ per colour channel), the two kernel weights, and optionally per-class
weights (CRF-as-RNN) and a full compatibility matrix.

Start and stopping: the fit starts from the published preset (``deepcrf.params.PRESETS``)
with the best mIoU on the images, and every ``eval_every`` steps the current parameters are
scored by refine()'s mIoU on the same images; the best-scoring iterate is returned (early
stopping on the search images, as the grid search selects on them). The cross-entropy
prefers weaker kernels than the mIoU does (a confident wrong pixel costs more than an unsure
one), so the overall scale of the best iterate's kernel weights is then checked by mIoU at
0.5, 0.7, 1.4 and 2 times its value, and the best of those is returned.

The result is refine() keyword arguments. Bandwidths come out per axis / per channel
(lists, rows first as refine() takes them). Weights: a number each (Potts) by default; with
``per_class_weights`` each ``*_compat`` is a vector v of L entries, refine()'s diagonal
compatibility diag(v) = -diag(w) for per-class weights w; with ``learn_compat`` it is the
(L, L) matrix mu·diag(w_k) of that kernel (refine()'s convention: message
-sum_k K_k(Q) mu_k^T, Potts = -I).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepcrf.dense import refine, unary_from_probs
from deepcrf.metrics import ConfusionMatrix
from deepcrf.nn import DenseCRF
from deepcrf.params import PRESETS, CRFParams
from deepcrf.search.samples import Sample, SampleFiles, check_samples, load_sample

__all__ = ["FitResult", "crf_params", "fit", "score_params"]

#: overall kernel-weight scales tried on the best iterate (see the module docstring)
WEIGHT_SCALES = (0.5, 0.7, 1.4, 2.0)


@dataclass
class FitResult:
    """The fitted refine() kwargs, their mIoU, the start point and the loss history."""

    params: dict
    miou: float
    pixel_acc: float
    start: dict
    start_name: str
    checkpoints: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def score_params(
    params: dict, samples: Sequence[Sample | SampleFiles], num_classes: int, ignore_index: int
) -> dict:
    """mIoU and pixel accuracy of refine(**params) on the samples (eval's metrics)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    for s in samples:
        x = load_sample(s)
        q = refine(np.array(x.probs, np.float32), np.array(x.image), **params)
        cm.update(q.argmax(0), x.label, name=s.name)
    return cm.scores()


def crf_params(crf: DenseCRF) -> dict:
    """refine() keyword arguments computing what ``crf`` computes in eval mode."""
    out: dict[str, Any] = {"iterations": crf.eval_iterations}
    weights = crf.kernel_weights.detach().double()
    mu = crf.compat.detach().double() if crf.compat is not None else None
    for k, kind in enumerate(crf.kinds):
        bw = [float(v) for v in crf.bandwidths(kind).detach().double()]
        w = weights[k]
        if mu is not None:
            compat: Any = (mu * w.expand(crf.num_classes)[None, :]).tolist()
        elif w.numel() > 1:
            compat = (-w).tolist()
        else:
            compat = float(w[0])
        if kind == "gaussian":
            out.update(gaussian_sxy=[bw[1], bw[0]], gaussian_compat=compat)
        else:
            out.update(bilateral_sxy=[bw[1], bw[0]], bilateral_srgb=bw[2:], bilateral_compat=compat)
    for kind in ("gaussian", "bilateral"):
        if kind not in crf.kinds:
            out[f"{kind}_compat"] = 0.0
    return CRFParams.from_dict(out, source="fitted parameters").to_dict()


def fit(
    samples: Sequence[Sample | SampleFiles],
    *,
    init: CRFParams | None = None,
    steps: int = 60,
    lr: float = 0.05,
    per_class_weights: bool = False,
    learn_compat: bool = False,
    eval_every: int = 10,
    seed: int = 0,
    ignore_index: int = 255,
    progress: Callable[[str, int], Any] | None = None,
) -> FitResult:
    """Fit refine()'s parameters on ``samples`` (see the module docstring)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--fit-steps: expected an integer >= 0, got {steps!r}")
    if not (lr > 0):
        raise ValueError(f"--fit-lr: expected a positive learning rate, got {lr!r}")
    if eval_every < 1:
        raise ValueError(f"eval_every: expected an integer >= 1, got {eval_every!r}")
    num_classes = check_samples(samples, ignore_index)
    threads = torch.get_num_threads()
    total = steps + (len(PRESETS) if init is None else 0) + len(WEIGHT_SCALES)
    bar = progress("fit", total) if progress is not None else None
    try:
        if init is None:
            start_name, start, start_scores = _best_preset(samples, num_classes, ignore_index, bar)
        else:
            start_name, start = "given", init.to_dict()
            start_scores = score_params(start, samples, num_classes, ignore_index)
        crf = _layer(start, num_classes, per_class_weights, learn_compat)
        optimizer = torch.optim.Adam(crf.parameters(), lr=lr)
        best = {
            "params": start,
            "miou": start_scores["miou"],
            "pixel_acc": start_scores["pixel_acc"],
            "step": 0,
        }
        checkpoints = [dict(best)]
        losses: list[float] = []
        order = np.random.default_rng(seed).permutation(len(samples))
        crf.train()
        for step in range(1, steps + 1):
            x = load_sample(samples[int(order[(step - 1) % len(samples)])])
            unary = unary_from_probs(torch.from_numpy(np.array(x.probs, np.float32)))[None]
            image = torch.from_numpy(np.array(x.image)).permute(2, 0, 1)[None]
            target = torch.from_numpy(np.asarray(x.label, np.int64))[None]
            logits = crf(unary, image.float())
            loss = F.cross_entropy(logits, target, ignore_index=ignore_index)
            optimizer.zero_grad()
            if loss.requires_grad:
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                if crf.compat is None and crf.kernel_weights.shape[1] == 1:
                    crf.kernel_weights.clamp_(min=0.0)  # Potts weights stay attractive
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0 or step == steps:
                params = crf_params(crf)
                scores = score_params(params, samples, num_classes, ignore_index)
                point = {
                    "params": params,
                    "miou": scores["miou"],
                    "pixel_acc": scores["pixel_acc"],
                    "step": step,
                }
                checkpoints.append(point)
                if point["miou"] > best["miou"]:
                    best = point
        for scale in WEIGHT_SCALES:
            params = _scaled_weights(best["params"], scale)
            scores = score_params(params, samples, num_classes, ignore_index)
            point = {
                "params": params,
                "miou": scores["miou"],
                "pixel_acc": scores["pixel_acc"],
                "step": f"x{scale:g}",
            }
            checkpoints.append(point)
            if point["miou"] > best["miou"]:
                best = point
            if bar is not None:
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return FitResult(
        params=best["params"],
        miou=best["miou"],
        pixel_acc=best["pixel_acc"],
        start=start,
        start_name=start_name,
        checkpoints=checkpoints,
        losses=losses,
    )


def _scaled_weights(params: dict, scale: float) -> dict:
    """``params`` with both kernels' weights (numbers, vectors or matrices) times ``scale``."""
    out = dict(params)
    for name in ("gaussian_compat", "bilateral_compat"):
        out[name] = (np.asarray(params[name], dtype=np.float64) * scale).tolist()
    return CRFParams.from_dict(out, source="scaled weights").to_dict()


def _best_preset(samples, num_classes: int, ignore_index: int, bar) -> tuple[str, dict, dict]:
    best = None
    for name, preset in PRESETS.items():
        params = preset.to_dict()
        scores = score_params(params, samples, num_classes, ignore_index)
        if bar is not None:
            bar.update(1)
        if best is None or scores["miou"] > best[2]["miou"]:
            best = (name, params, scores)
    assert best is not None
    return best


def _layer(start: dict, num_classes: int, per_class: bool, learn_compat: bool) -> DenseCRF:
    """A DenseCRF computing refine(**start), ready to learn its parameters."""
    for name in ("gaussian_compat", "bilateral_compat"):
        if not isinstance(start[name], (int, float)):
            raise ValueError(f"init: {name} must be a number to start a fit, got {start[name]!r}")
    return DenseCRF(
        num_classes,
        iterations=start["iterations"],
        eval_iterations=start["iterations"],
        gaussian_sxy=start["gaussian_sxy"],
        gaussian_compat=start["gaussian_compat"],
        bilateral_sxy=start["bilateral_sxy"],
        bilateral_srgb=start["bilateral_srgb"],
        bilateral_compat=start["bilateral_compat"],
        per_class_weights=per_class,
        learn_compat=learn_compat,
        learn_bandwidths=True,
    )
