"""Score many CRF parameter points on many images, sharing everything the math allows.

Points that differ only in the kernel weights (w1, w2) and the iteration count share their
features, lattices and normalisations: per batch of images this module builds the
spatial lattice once (cached by size) and the bilateral lattice once per (σα, σβ), then runs
THE mean-field loop (``deepcrf.crf.mean_field``) once for a whole chunk of points: the
marginals of P weight pairs are stacked as (N·P, L) rows, one wide filtering per kernel per
iteration serves all of them, and the label maps of every requested iteration count are
taken from the same run (mean field at t iterations is a prefix of the run to T).

Per point this is exactly refine()'s message w2·K̃γ(Q) + w1·K̃αβ(Q) (Potts weights, symmetric
normalisation, probabilities clipped at 1e-5 as refine() does); only the floating-point
summation order of the two kernels differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepcrf.crf import Kernel, Pairwise, SideBySide, mean_field
from deepcrf.dense import unary_from_probs
from deepcrf.features import bilateral_features, grid_features, grid_lattice
from deepcrf.lattice import build_lattice
from deepcrf.metrics import confusion_matrix
from deepcrf.search.samples import Sample, SampleFiles, load_sample

__all__ = ["ScoreGroup", "group_points", "score_group"]

#: Pixels per image batch (small images are scored together, one lattice per batch).
BATCH_PIXELS = 1 << 18
#: Float32 values per stacked marginals tensor (N·P·L); bounds the points run together.
STACK_VALUES = 1 << 25


@dataclass(frozen=True)
class ScoreGroup:
    """Points sharing features: the kernels' bandwidths, and per point (w1, w2, iterations)."""

    gaussian_sxy: float | tuple
    bilateral_sxy: float | tuple
    bilateral_srgb: float | tuple
    points: tuple[tuple[float, float, int], ...]


def _shared(params: dict) -> tuple:
    return tuple(
        tuple(v) if isinstance(v, list) else v
        for v in (params["gaussian_sxy"], params["bilateral_sxy"], params["bilateral_srgb"])
    )


def group_points(points: Sequence[dict]) -> list[tuple[ScoreGroup, list[int]]]:
    """Split refine() keyword dicts into groups of shared features, in first-seen order.

    Returns (group, indices into ``points``) pairs; every point's compat must be a number.
    """
    order: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        for name in ("gaussian_compat", "bilateral_compat"):
            if not isinstance(p[name], (int, float)):
                raise ValueError(f"grid: {name} must be a number in a grid search, got {p[name]!r}")
        order.setdefault(_shared(p), []).append(i)
    groups = []
    for key, indices in order.items():
        pts = tuple(
            (
                float(points[i]["bilateral_compat"]),
                float(points[i]["gaussian_compat"]),
                int(points[i]["iterations"]),
            )
            for i in indices
        )
        groups.append((ScoreGroup(*key, points=pts), indices))
    return groups


def _message(gaussian, bilateral, w1: list[float], w2: list[float], labels: int, segments):
    """Messages of P weight pairs at once for marginals stacked as (N·P, L) rows: one
    ``Pairwise`` over P·L channels whose diagonal compatibilities carry each point's Potts
    weights (pydensecrf's sign: -w attracts), run side by side."""
    kernels = []
    for kernel, weights in ((gaussian, w2), (bilateral, w1)):
        if kernel is not None:
            features, lattice = kernel
            compat = -torch.tensor(weights, dtype=torch.float32).repeat_interleave(labels)
            kernels.append(Kernel(features, compat, "symmetric", lattice))
    return SideBySide(Pairwise(kernels, len(w1) * labels, segments), len(w1))


def _batches(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Consecutive same-size samples grouped up to BATCH_PIXELS pixels."""
    batches: list[list[Sample]] = []
    for s in samples:
        last = batches[-1] if batches else None
        if (
            last is not None
            and last[0].label.shape == s.label.shape
            and (len(last) + 1) * s.label.size <= BATCH_PIXELS
        ):
            last.append(s)
        else:
            batches.append([s])
    return batches


def score_group(
    group: ScoreGroup,
    samples: Sequence[Sample | SampleFiles],
    num_classes: int,
    ignore_index: int = 255,
) -> list[np.ndarray]:
    """The (L, L) int64 confusion matrix of every point of ``group`` over ``samples``."""
    # same-size images next to each other: they batch together and hit the grid-lattice
    # cache (the sums of integer confusion matrices do not depend on the order)
    loaded = sorted((load_sample(s) for s in samples), key=lambda x: x.label.shape)
    total = [np.zeros((num_classes, num_classes), np.int64) for _ in group.points]
    for batch in _batches(loaded):
        for k, conf in enumerate(_score_batch(group, batch, num_classes, ignore_index)):
            total[k] += conf
    return total


def _score_batch(group: ScoreGroup, batch: list[Sample], labels: int, ignore_index: int):
    shape = batch[0].label.shape
    n_img = len(batch)
    n = shape[0] * shape[1]
    segments = [i * n for i in range(n_img + 1)]
    probs = torch.cat([torch.from_numpy(np.array(s.probs, np.float32)) for s in batch], 1)
    # (L, B*H, W) -> (B*N, L) unary logits, as refine() computes them
    unary = unary_from_probs(probs.reshape(labels, -1).t().contiguous())
    gt = torch.from_numpy(np.stack([np.asarray(s.label) for s in batch]).reshape(-1))
    w1s = [p[0] for p in group.points]
    w2s = [p[1] for p in group.points]
    gaussian = bilateral = None
    if any(w != 0 for w in w2s):
        features = grid_features(shape, group.gaussian_sxy).repeat(n_img, 1)
        lattice = grid_lattice(shape, group.gaussian_sxy, copies=n_img)
        gaussian = (features, lattice)
    if any(w != 0 for w in w1s):
        feats = torch.cat(
            [
                bilateral_features(
                    torch.from_numpy(np.array(s.image)),
                    group.bilateral_sxy,
                    group.bilateral_srgb,
                )
                for s in batch
            ]
        )
        bilateral = (feats, build_lattice(feats, segments))
    confusions: list[np.ndarray | None] = [None] * len(group.points)
    chunk = max(1, STACK_VALUES // (n * n_img * labels))
    order = list(range(len(group.points)))
    for start in range(0, len(order), chunk):
        members = order[start : start + chunk]
        p = len(members)
        message = _message(
            gaussian,
            bilateral,
            [w1s[i] for i in members],
            [w2s[i] for i in members],
            labels,
            segments,
        )
        wanted: dict[int, list[int]] = {}
        for j, i in enumerate(members):
            wanted.setdefault(group.points[i][2], []).append(j)

        def record(t: int, q: torch.Tensor, members=members, wanted=wanted, p=p) -> None:
            if t + 1 in wanted:
                preds = q.view(-1, p, labels).argmax(2)
                for j in wanted[t + 1]:
                    confusions[members[j]] = _confusion(preds[:, j], gt, labels, ignore_index)

        stacked = unary.repeat(1, p).view(-1, labels)  # rows (pixel, point)
        if 0 in wanted:
            pred = unary.argmax(1)
            for j in wanted[0]:
                confusions[members[j]] = _confusion(pred, gt, labels, ignore_index)
        steps = max(wanted)
        if steps > 0:
            mean_field(stacked, message, steps, callback=record)
    return confusions


def _confusion(pred: torch.Tensor, gt: torch.Tensor, labels: int, ignore_index: int):
    return confusion_matrix(pred, gt, labels, ignore_index).numpy()
