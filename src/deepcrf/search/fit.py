"""``fit``: the dense CRF's parameters by gradient descent instead of a grid.

The CRF runs as ``deepcrf.nn.DenseCRF`` with ``learn_bandwidths`` (Schwing & Urtasun 2015)
on the network's fixed probabilities (unaries log(max(p, 1e-5)), as refine() takes them).
Learned: DeepLab's three bandwidths σγ, σα, σβ (or, with ``per_axis``, the 7 per axis and
colour channel), the two kernel weights, and optionally per-class weights (CRF-as-RNN) and a
full compatibility matrix.

Objective (``loss``): ``"iou"`` (default) is the soft Jaccard loss of the mean-field
marginals, 1 - |Q∩Y| / |Q∪Y| per class present in the image, averaged (what the search's
mIoU measures, made differentiable); ``"ce"`` is their cross-entropy. The cross-entropy
prefers weaker kernels than the mIoU does (a confidently wrong pixel costs more than an
unsure one) and on generated scenes lowered the mIoU after a few steps, hence the default.
Optimiser: Adam on mini-batches of ``batch`` images in a seeded order, in log space for
every parameter (the bandwidths are log-parametrised by the layer, the kernel weights are
stepped as log-weights): the same relative step ``lr`` for each, and weights stay positive.

Selection (what the search is judged by): the descent starts from the published preset
(``deepcrf.params.PRESETS``) with the best mIoU on the images (or ``init``), and every
``eval_every`` steps the current parameters are scored by refine()'s mIoU on the same images.
An iterate counts only if it beats the start on at least 90% of 1000 paired bootstrap
resamples of the images (seeded): on a few images the descent's gains are often noise that
held-out images do not repeat. Among the start and those iterates, the earliest within
``tolerance`` of the highest mIoU is kept; its overall kernel-weight scale is then checked at
0.5, 0.7, 1.4 and 2 times under the same two rules. So the result never scores below its
start on the searched images.

Determinism and resuming: the descent runs in one thread (its floating-point sums then do not
depend on the machine's load or ``jobs``; ``DEEPCRF_THREADS=N`` forces N threads everywhere
and voids this); the mIoU scoring is spread over ``jobs`` processes,
one image per task, with integer confusion matrices summed, so any ``jobs`` gives the same
result. Every scored point and, at every evaluation, the layer's and the optimiser's state are
appended to ``results_file`` (``deepcrf.search.results``); a killed fit restarts from the last
saved state and finishes exactly as an uninterrupted one.

The result is refine() keyword arguments. Bandwidths are numbers, or with ``per_axis``
lists (rows first, as refine() takes them). Weights: a number each (Potts) by default; with
``per_class_weights`` each ``*_compat`` is a vector v of L entries, refine()'s diagonal
compatibility diag(v) = -diag(w) for per-class weights w; with ``learn_compat`` it is the
(L, L) matrix mu·diag(w_k) of that kernel (refine()'s convention: message
-sum_k K_k(Q) mu_k^T, Potts = -I).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepcrf.dense import refine, unary_from_probs
from deepcrf.metrics import confusion_matrix, scores_from_confusion
from deepcrf.nn import DenseCRF
from deepcrf.parallel import process_map
from deepcrf.params import PRESETS, CRFParams
from deepcrf.search.grid import point_key
from deepcrf.search.results import ResultsLog
from deepcrf.search.samples import (
    Sample,
    SampleFiles,
    check_samples,
    fingerprint,
    forget,
    load_sample,
    worker_samples,
)

__all__ = [
    "LOSSES",
    "FitResult",
    "bootstrap_miou",
    "crf_params",
    "fit",
    "score_params",
    "soft_iou_loss",
]

#: overall kernel-weight scales tried on the chosen iterate (see the module docstring)
WEIGHT_SCALES = (0.5, 0.7, 1.4, 2.0)
#: mIoU differences up to this count as equal (the grid search's tolerance)
TOLERANCE = 1e-3
#: a fitted point replaces its reference only if it scores higher on this share of ...
CONFIDENCE = 0.9
#: ... this many paired bootstrap resamples of the searched images
RESAMPLES = 1000
LOSSES = ("iou", "ce")


@dataclass
class FitResult:
    """The fitted refine() kwargs, their mIoU, the start, every scored checkpoint, the
    baselines (no CRF, default parameters) and the loss of every step."""

    params: dict
    miou: float
    pixel_acc: float
    start: dict
    start_name: str
    checkpoints: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    resumed_at: int = 0


def soft_iou_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """1 - mean soft Jaccard index of softmax(``logits``) (B, L, H, W) against ``target``
    (B, H, W), per image over the classes present in it; void pixels are left out."""
    q = torch.softmax(logits, 1)
    valid = (target != ignore_index).unsqueeze(1)
    y = F.one_hot(target.clamp(0, q.shape[1] - 1), q.shape[1]).movedim(-1, 1).to(q.dtype)
    y, q = y * valid, q * valid
    inter = (q * y).flatten(2).sum(2)
    union = (q + y).flatten(2).sum(2) - inter
    present = y.flatten(2).sum(2) > 0
    if not present.any():
        return logits.sum() * 0.0
    return (1.0 - inter[present] / union[present].clamp_min(1e-6)).mean()


def score_params(
    params: dict,
    samples: Sequence[Sample | SampleFiles],
    num_classes: int,
    ignore_index: int = 255,
    jobs: int = 1,
) -> dict:
    """mIoU and pixel accuracy of refine(**params) on the samples (eval's metrics)."""
    [conf] = _confusions([params], samples, num_classes, ignore_index, jobs)
    return scores_from_confusion(torch.from_numpy(conf.sum(0)))


def _confusions(points, samples, num_classes: int, ignore_index: int, jobs: int) -> list:
    """The (N, L, L) per-image confusions of refine(**p) on the N samples, for every point."""
    total = [np.zeros((len(samples), num_classes, num_classes), np.int64) for _ in points]
    func = functools.partial(
        _image_task,
        points=list(points),
        samples=samples,
        num_classes=num_classes,
        ignore_index=ignore_index,
    )
    for index, confs in process_map(
        func, list(range(len(samples))), jobs=jobs, threads=1, help_locally=True, start="auto"
    ):
        for k, c in enumerate(confs):
            total[k][index] = c
    return total


def _image_task(index: int, points, samples, num_classes: int, ignore_index: int) -> list:
    """Every point's confusion on one image, single-threaded (results independent of jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = load_sample(samples[index])
        probs, image = np.array(x.probs, np.float32), np.array(x.image)
        gt = torch.from_numpy(np.asarray(x.label).astype(np.int64))
        out = []
        for p in points:
            pred = torch.from_numpy(refine(probs, image, **p).argmax(0))
            out.append(confusion_matrix(pred, gt, num_classes, ignore_index).numpy())
        return out
    finally:
        torch.set_num_threads(threads)


def crf_params(crf: DenseCRF) -> dict:
    """refine() keyword arguments computing what ``crf`` computes in eval mode."""
    out: dict[str, Any] = {"iterations": crf.eval_iterations}
    weights = crf.kernel_weights.detach().double()
    mu = crf.compat.detach().double() if crf.compat is not None else None
    for k, kind in enumerate(crf.kinds):
        bw: list[Any] = [float(v) for v in crf.bandwidths(kind).detach().double()]
        w = weights[k]
        if mu is not None:
            compat: Any = (mu * w.expand(crf.num_classes)[None, :]).tolist()
        elif w.numel() > 1:
            compat = (-w).tolist()
        else:
            compat = float(w[0])
        sxy = _number_if_equal([bw[1], bw[0]])
        if kind == "gaussian":
            out.update(gaussian_sxy=sxy, gaussian_compat=compat)
        else:
            srgb = _number_if_equal(bw[2:])
            out.update(bilateral_sxy=sxy, bilateral_srgb=srgb, bilateral_compat=compat)
    for kind in ("gaussian", "bilateral"):
        if kind not in crf.kinds:
            out[f"{kind}_compat"] = 0.0
    return CRFParams.from_dict(out, source="fitted parameters").to_dict()


def _number_if_equal(values: list[float]) -> float | list[float]:
    """One number for a bandwidth equal on every axis / channel (what refine() reads alike)."""
    return values[0] if len(set(values)) == 1 else values


def fit(
    samples: Sequence[Sample | SampleFiles],
    *,
    init: CRFParams | None = None,
    steps: int = 40,
    lr: float = 0.05,
    batch: int = 4,
    loss: str = "iou",
    per_axis: bool = False,
    per_class_weights: bool = False,
    learn_compat: bool = False,
    eval_every: int = 10,
    seed: int = 0,
    ignore_index: int = 255,
    tolerance: float = TOLERANCE,
    jobs: int = 1,
    results_file: str | Path | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> FitResult:
    """Fit refine()'s parameters on ``samples`` (see the module docstring).

    Args:
        samples: the images (probabilities computed once, by the caller).
        init: the start; None starts from the best-scoring published preset.
        steps, lr, batch, loss, eval_every, seed: the descent (module docstring).
        per_axis: one bandwidth per axis and colour channel instead of σα, σβ, σγ.
        per_class_weights, learn_compat: also learn per-class weights / a compatibility.
        tolerance: mIoU differences up to this count as equal when choosing.
        jobs: processes scoring the mIoU; any value gives the same result.
        results_file: JSONL of scored points and descent states; one from the same fit is
            resumed, one from another search is refused.
        progress: ``progress(stage, total)`` returning an object with ``update(n)`` and
            ``close()`` (e.g. a tqdm factory), or None.
    """
    _check_settings(steps, lr, batch, loss, eval_every, tolerance, jobs)
    num_classes = check_samples(samples, ignore_index)
    search = {
        "method": "fit",
        "fit": {
            "init": init.to_dict() if init is not None else "best preset",
            "steps": steps,
            "lr": lr,
            "batch": batch,
            "loss": loss,
            "per_axis": per_axis,
            "per_class_weights": per_class_weights,
            "learn_compat": learn_compat,
            "eval_every": eval_every,
            "seed": seed,
            "tolerance": tolerance,
        },
        "images": [s.name for s in samples],
        "data": fingerprint(samples),
        "ignore_index": ignore_index,
    }
    log = ResultsLog(results_file, search)
    threads = torch.get_num_threads()
    with worker_samples(samples, jobs, prefix="deepcrf-fit-") as shared:
        score = functools.partial(
            _score_logged,
            log=log,
            samples=shared,
            num_classes=num_classes,
            ignore_index=ignore_index,
            jobs=jobs,
        )
        try:
            return _run(
                score, log, samples, num_classes, ignore_index, search["fit"], init, progress
            )
        finally:
            torch.set_num_threads(threads)
            forget(s for s in shared if s not in samples)


def _check_settings(steps, lr, batch, loss, eval_every, tolerance, jobs) -> None:
    def integer(value, least: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and value >= least

    if not integer(steps, 0):
        raise ValueError(f"--fit-steps: expected an integer >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"--fit-lr: expected a positive learning rate, got {lr!r}")
    if not integer(batch, 1):
        raise ValueError(f"--fit-batch: expected an integer >= 1, got {batch!r}")
    if loss not in LOSSES:
        raise ValueError(f"--fit-loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
    if not integer(eval_every, 1):
        raise ValueError(f"eval_every: expected an integer >= 1, got {eval_every!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: expected a number in [0, 1), got {tolerance!r}")
    if not integer(jobs, 1):
        raise ValueError(f"--jobs: expected an integer >= 1, got {jobs!r}")


def _score_logged(points, stage: str, *, log, samples, num_classes, ignore_index, jobs, bar=None):
    """Rows {params, miou, pixel_acc, stage} of ``points``, scoring only those not in the log."""
    keys = [point_key(p) for p in points]
    todo = [i for i, k in enumerate(keys) if k not in log and keys.index(k) == i]
    if todo:
        confs = _confusions([points[i] for i in todo], samples, num_classes, ignore_index, jobs)
        for i, conf in zip(todo, confs):
            s = scores_from_confusion(torch.from_numpy(conf.sum(0)))
            log.append(
                {
                    "key": keys[i],
                    "params": points[i],
                    "miou": s["miou"],
                    "pixel_acc": s["pixel_acc"],
                    "confusion": conf.sum(0).tolist(),
                    "per_image": conf.tolist(),
                }
            )
    if bar is not None:
        bar.update(len(points))
    rows = []
    for k, p in zip(keys, points):
        row = log.get(k)
        assert row is not None
        rows.append(
            {"params": p, "miou": row["miou"], "pixel_acc": row["pixel_acc"], "step": stage}
        )
    return rows


def _run(score, log: ResultsLog, samples, num_classes, ignore_index, cfg: dict, init, progress):
    steps, eval_every = cfg["steps"], cfg["eval_every"]
    states = sorted(
        (row for key, row in log.rows.items() if key.startswith("state:")), key=lambda r: r["step"]
    )
    done = states[-1]["step"] if states else 0
    evals = len([s for s in range(done + 1, steps + 1) if s % eval_every == 0 or s == steps])
    presets = len(PRESETS) + 1 if init is None else 3
    total = presets + (steps - done) + evals + len(WEIGHT_SCALES)
    bar = progress("fit", total) if progress is not None else None
    try:
        baseline_points = {
            "no_crf": CRFParams(iterations=0).to_dict(),
            "default": CRFParams().to_dict(),
        }
        if init is None:
            names = list(PRESETS)
            rows = score(
                [PRESETS[n].to_dict() for n in names] + [baseline_points["no_crf"]],
                "preset",
                bar=bar,
            )
            k = _choose(rows[: len(names)], 0.0)  # the best preset, the first on ties
            start_name, start_row = names[k], rows[k]
            start_row["step"] = 0
        else:
            start_name = "given"
            start_row = score([init.to_dict(), *baseline_points.values()], "start", bar=bar)[0]
            start_row["step"] = 0
        baseline = {name: score([p], "baseline")[0]["miou"] for name, p in baseline_points.items()}
        start = start_row["params"]
        crf = _layer(start, num_classes, cfg["per_class_weights"], cfg["learn_compat"])
        descent = _Descent(crf, cfg["lr"], tie=not cfg["per_axis"])
        checkpoints, losses = [start_row], []
        for state in states:  # read back from JSON: the fresh run's key order
            c = state["checkpoint"]
            params = CRFParams.from_dict(c["params"]).to_dict()
            checkpoints.append(
                {
                    "params": params,
                    "miou": c["miou"],
                    "pixel_acc": c["pixel_acc"],
                    "step": c["step"],
                }
            )
            losses.extend(state["losses"])
        if states:
            descent.load(states[-1])
        order = _order(cfg["seed"], len(samples), steps * cfg["batch"])
        torch.set_num_threads(1)  # the descent's sums must not depend on the load
        crf.train()
        recent: list[float] = []
        for step in range(done + 1, steps + 1):
            picked = order[(step - 1) * cfg["batch"] : step * cfg["batch"]]
            picked_samples = [samples[i] for i in picked]
            recent.append(descent.step(picked_samples, cfg["loss"], ignore_index))
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0 or step == steps:
                [row] = score([crf_params(crf)], f"step {step}", bar=bar)
                row["step"] = step
                checkpoints.append(row)
                losses.extend(recent)
                log.append(
                    {
                        "key": f"state:{step:08d}",
                        "step": step,
                        "checkpoint": row,
                        "losses": recent,
                        **descent.state(),
                    }
                )
                recent = []
        chosen = _select(checkpoints, log, cfg["tolerance"])
        scaled = score(
            [_scaled_weights(chosen["params"], s) for s in WEIGHT_SCALES],
            "weights",
            bar=bar,
        )
        for row, s in zip(scaled, WEIGHT_SCALES):
            row["step"] = f"x{s:g}"
        final = _select([chosen, *scaled], log, cfg["tolerance"])
    finally:
        if bar is not None:
            bar.close()
    return FitResult(
        params=final["params"],
        miou=final["miou"],
        pixel_acc=final["pixel_acc"],
        start=start,
        start_name=start_name,
        checkpoints=checkpoints + scaled,
        losses=losses,
        baseline=baseline,
        resumed_at=done,
    )


def _select(rows: Sequence[dict], log: ResultsLog, tolerance: float) -> dict:
    """Among ``rows[0]`` (the reference) and the rows that beat it on at least
    ``CONFIDENCE`` of the bootstrap resamples of the images, the earliest within
    ``tolerance`` of the highest mIoU."""
    reference = _per_image(log, rows[0])
    kept = [rows[0]] + [
        r for r in rows[1:] if _bootstrap_wins(_per_image(log, r), reference) >= CONFIDENCE
    ]
    return kept[_choose(kept, tolerance)]


def _per_image(log: ResultsLog, row: dict) -> np.ndarray:
    found = log.get(point_key(row["params"]))
    assert found is not None
    return np.asarray(found["per_image"], np.int64)


def bootstrap_miou(per_image: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """mIoU (eval's definition) of the images drawn ``counts`` (R, N) times from
    ``per_image`` (N, L, L) confusions: one value per resample."""
    conf = np.tensordot(counts, per_image, axes=(1, 0)).astype(np.float64)  # (R, L, L)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    gt, pred = conf.sum(2), conf.sum(1)
    union = gt + pred - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    present = gt > 0
    return (iou * present).sum(1) / np.maximum(present.sum(1), 1)


def _bootstrap_wins(a: np.ndarray, b: np.ndarray) -> float:
    """Share of paired bootstrap resamples of the images (seeded) on which ``a`` scores a
    higher mIoU than ``b``."""
    if np.array_equal(a, b):
        return 0.0
    rng = np.random.default_rng(0)
    n = len(a)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(RESAMPLES)])
    return float(np.mean(bootstrap_miou(a, counts) > bootstrap_miou(b, counts)))


def _choose(rows: Sequence[dict], tolerance: float) -> int:
    """The first row whose mIoU is within ``tolerance`` of the highest."""
    top = max(r["miou"] for r in rows)
    return next(i for i, r in enumerate(rows) if r["miou"] >= top - tolerance)


def _order(seed: int, count: int, length: int) -> list[int]:
    """Image indices for the whole descent: seeded permutations, one per pass."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < length:
        out.extend(int(i) for i in rng.permutation(count))
    return out[:length]


class _Descent:
    """Adam in log space on the layer's parameters. The layer's kernel weights and (with
    ``tie``) its bandwidths are computed from free parameters: log-weights (the same relative
    step for each; weights stay positive, i.e. attractive Potts / per-class weights), and one
    log-bandwidth per kernel's positions and one per its colours, as DeepLab's σα, σβ, σγ
    (entries that start equal stay equal; without ``tie`` every axis and channel is free)."""

    def __init__(self, crf: DenseCRF, lr: float, tie: bool = True) -> None:
        self.crf = crf
        #: (layer parameter, free parameter, index into the free one or None, exp or not)
        self.links: list[tuple[torch.nn.Parameter, torch.nn.Parameter, Any, bool]] = []
        start = crf.kernel_weights.detach().clamp_min(1e-6)
        self.links.append((crf.kernel_weights, torch.nn.Parameter(start.log()), None, True))
        for kind in crf.kinds if tie else ():
            target = getattr(crf, f"{kind}_log_bandwidths", None)
            if target is None:
                continue
            values = target.detach().tolist()
            groups: dict[tuple, int] = {}
            index = []
            for i, v in enumerate(values):
                colour = kind == "bilateral" and i >= crf.spatial_dims
                index.append(groups.setdefault((colour, v), len(groups)))
            free = torch.tensor(_firsts(values, index), dtype=target.dtype)
            self.links.append((target, torch.nn.Parameter(free), torch.tensor(index), False))
        linked = {id(t) for t, *_ in self.links}
        rest = [p for p in crf.parameters() if id(p) not in linked]
        self.optimizer = torch.optim.Adam([f for _, f, *_ in self.links] + rest, lr=lr)
        self._sync()

    def _sync(self) -> None:
        with torch.no_grad():
            for target, free, index, exp in self.links:
                value = free.exp() if exp else free
                target.copy_(value if index is None else value[index])

    def _free_grads(self) -> None:
        for target, free, index, exp in self.links:
            grad = target.grad
            if grad is None:
                continue
            if exp:  # d/d log w = w d/dw
                grad = grad * target.detach()
            if index is not None:
                grad = torch.zeros_like(free).index_add_(0, index, grad)
            free.grad = grad

    def step(self, batch: list, loss_name: str, ignore_index: int) -> float:
        """One step on the mean loss of ``batch``; returns that loss."""
        crf = self.crf
        self.optimizer.zero_grad()
        crf.zero_grad()
        total = 0.0
        for sample in batch:
            x = load_sample(sample)
            unary = unary_from_probs(torch.from_numpy(np.array(x.probs, np.float32)))[None]
            image = torch.from_numpy(np.array(x.image)).permute(2, 0, 1)[None].float()
            target = torch.from_numpy(np.asarray(x.label).astype(np.int64))[None]
            logits = crf(unary, image)
            if loss_name == "ce":
                value = F.cross_entropy(logits, target, ignore_index=ignore_index)
            else:
                value = soft_iou_loss(logits, target, ignore_index)
            if value.requires_grad:
                (value / len(batch)).backward()
            total += float(value.detach()) / len(batch)
        self._free_grads()
        self.optimizer.step()
        self._sync()
        return total

    def state(self) -> dict:
        """Layer, log-weights and Adam state, exactly (as JSON values)."""
        return {
            "layer": _to_json(self.crf.state_dict()),
            "free": [_to_json(free.detach()) for _, free, *_ in self.links],
            "optimizer": _to_json(self.optimizer.state_dict()),
        }

    def load(self, state: dict) -> None:
        self.crf.load_state_dict(_from_json(state["layer"]))
        with torch.no_grad():
            for (_, free, *_), value in zip(self.links, state["free"]):
                free.copy_(_from_json(value))
        adam = _from_json(state["optimizer"])
        adam["state"] = {int(k): v for k, v in adam["state"].items()}
        self.optimizer.load_state_dict(adam)
        self._sync()


def _firsts(values: list[float], index: list[int]) -> list[float]:
    """The value of each group's first entry (groups numbered in first-seen order)."""
    out: dict[int, float] = {}
    for v, g in zip(values, index):
        out.setdefault(g, v)
    return [out[g] for g in range(len(out))]


def _to_json(obj):
    """Nested dicts/lists of tensors as JSON values (float32 -> float64 text is exact)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {"tensor": t.reshape(-1).tolist(), "shape": list(t.shape), "dtype": str(t.dtype)}
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    return obj


def _from_json(obj):
    if isinstance(obj, dict) and set(obj) == {"tensor", "shape", "dtype"}:
        dtype = getattr(torch, obj["dtype"].removeprefix("torch."))
        return torch.tensor(obj["tensor"], dtype=dtype).reshape(obj["shape"])
    if isinstance(obj, dict):
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _scaled_weights(params: dict, scale: float) -> dict:
    """``params`` with both kernels' weights (numbers, vectors or matrices) times ``scale``."""
    out = dict(params)
    for name in ("gaussian_compat", "bilateral_compat"):
        out[name] = (np.asarray(params[name], dtype=np.float64) * scale).tolist()
    return CRFParams.from_dict(out, source="scaled weights").to_dict()


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
