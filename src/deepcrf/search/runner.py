"""``grid_search``: choose refine()'s parameters by the mIoU of the refined predictions.

Each parameter point is scored on the chosen images with the same confusion-matrix metrics
as ``deepcrf eval`` (one dataset-level matrix, void ignored, mIoU over the classes present in
the ground truth). The network's probabilities are read once per process and reused by every
point; points that share bandwidths share their lattices (``deepcrf.search.scoring``).

Determinism: every point is computed single-threaded in a task that does not depend on the
number of processes, and results are listed in grid order, so ``jobs=1`` and ``jobs=N`` give
bit-identical tables and the same best point; a resumed search reads the finished points back.

Choosing the best point (generalisation over the last decimal): the points whose mIoU is
within ``tolerance`` of the highest are treated as equally good, and among them the most
robust one wins: the highest mean mIoU over the point and its neighbours on the grid (one
step along each searched axis), then the higher mIoU, then the earlier point in grid order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepcrf.metrics import scores_from_confusion
from deepcrf.parallel import process_map
from deepcrf.params import CRFParams
from deepcrf.search.grid import (
    COARSE_GRID,
    DEEPLAB_BASE,
    expand_grid,
    fine_grid,
    point_key,
    validate_grid,
)
from deepcrf.search.results import ResultsLog
from deepcrf.search.samples import (
    Sample,
    SampleFiles,
    check_samples,
    fingerprint,
    forget,
    worker_samples,
)
from deepcrf.search.scoring import ScoreGroup, group_points, score_group

__all__ = ["COARSE_TO_FINE", "SearchResult", "grid_search", "select_best"]

COARSE_TO_FINE = "coarse-to-fine"
#: points within this mIoU of the best count as equally good (see the module docstring)
TOLERANCE = 1e-3
#: at most this many points per task (a task shares one lattice per image batch)
TASK_POINTS = 8


@dataclass
class SearchResult:
    """What a search found: ``best`` refine() kwargs, ``baseline`` mIoUs, every point."""

    best: dict
    baseline: dict
    results: list[dict]
    method: str = "grid"
    images: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The crf-search output: ``best`` is directly usable as ``--crf-params``."""
        return {
            "best": self.best,
            "baseline": self.baseline,
            "method": self.method,
            "num_images": len(self.images),
            "images": self.images,
            **self.extra,
            "results": self.results,
        }


def grid_search(
    samples: Sequence[Sample | SampleFiles],
    grid: str | Mapping[str, Sequence[Any]] = COARSE_TO_FINE,
    *,
    base: CRFParams = DEEPLAB_BASE,
    jobs: int = 1,
    results_file: str | Path | None = None,
    ignore_index: int = 255,
    tolerance: float = TOLERANCE,
    progress: Callable[[str, int], Any] | None = None,
) -> SearchResult:
    """Score every point of ``grid`` (or DeepLab's coarse-to-fine protocol) on ``samples``.

    Args:
        samples: the images (probabilities computed once, by the caller).
        grid: ``"coarse-to-fine"`` or a mapping of refine() names to value lists.
        base: the parameters not in the grid (DeepLab: w2 = 3, σγ = 3, 10 iterations).
        jobs: worker processes (spawned, one thread each); any value gives the same result.
        results_file: JSONL of finished points; an existing one from the same search is
            resumed, one from another search is refused.
        progress: ``progress(stage, total)`` returning an object with ``update(n)`` and
            ``close()`` (e.g. a tqdm factory), or None.
    """
    if grid == COARSE_TO_FINE:
        stage_name, axes = "coarse", validate_grid(COARSE_GRID, base, "grid")
    elif isinstance(grid, str):
        raise ValueError(f"grid: expected {COARSE_TO_FINE!r} or a mapping, got {grid!r}")
    else:
        stage_name, axes = "grid", validate_grid(grid, base, "grid")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: expected a number in [0, 1), got {tolerance!r}")
    num_classes = check_samples(samples, ignore_index)
    search = {
        "protocol": COARSE_TO_FINE if grid == COARSE_TO_FINE else "grid",
        "grid": axes,
        "base": base.to_dict(),
        "images": [s.name for s in samples],
        "data": fingerprint(samples),
        "ignore_index": ignore_index,
        "tolerance": tolerance,
    }
    log = ResultsLog(results_file, search)
    with worker_samples(samples, jobs, prefix="deepcrf-search-") as shared:
        run = functools.partial(
            _evaluate,
            samples=shared,
            num_classes=num_classes,
            ignore_index=ignore_index,
            log=log,
            jobs=jobs,
            progress=progress,
        )
        try:
            baseline, results, best = _stages(
                run, stage_name, axes, grid == COARSE_TO_FINE, base, tolerance
            )
        finally:
            forget(s for s in shared if s not in samples)
    return SearchResult(
        best=best["params"],
        baseline=baseline,
        results=[_public(r) for r in results],
        method="grid",
        images=[s.name for s in samples],
        extra={"best_miou": best["miou"], "best_pixel_acc": best["pixel_acc"]},
    )


def _stages(run, stage_name: str, axes: dict, coarse_to_fine: bool, base, tolerance: float):
    """Baselines, then the grid (or coarse then fine): (baseline, rows, best row)."""
    baseline_points = {
        "no_crf": base.replace(iterations=0).to_dict(),
        "default": CRFParams().to_dict(),
    }
    baseline_rows = run("baseline", list(baseline_points.values()))
    baseline = {name: row["miou"] for name, row in zip(baseline_points, baseline_rows)}
    results = rows = run(stage_name, expand_grid(axes, base))
    best = select_best(rows, axes, tolerance)
    if coarse_to_fine:
        axes = fine_grid(axes, best["params"])
        fine_rows = run("fine", expand_grid(axes, base))
        seen = {r["key"] for r in rows}
        results = rows + [r for r in fine_rows if r["key"] not in seen]
        best = select_best(fine_rows, axes, tolerance)
    return baseline, results, best


def _public(row: dict) -> dict:
    return {
        "params": row["params"],
        "miou": row["miou"],
        "pixel_acc": row["pixel_acc"],
        "stage": row["stage"],
    }


def _evaluate(
    stage: str,
    points: list[dict],
    *,
    samples: list,
    num_classes: int,
    ignore_index: int,
    log: ResultsLog,
    jobs: int,
    progress,
) -> list[dict]:
    """Rows for ``points`` (grid order), computing only those not in the log."""
    keys = [point_key(p) for p in points]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in log:
            first.setdefault(k, i)
    todo = list(first.values())
    tasks: list[tuple[ScoreGroup, list[int]]] = []
    for group, members in group_points([points[i] for i in todo]):
        for start in range(0, len(members), TASK_POINTS):
            stop = start + TASK_POINTS
            sub = ScoreGroup(
                group.gaussian_sxy,
                group.bilateral_sxy,
                group.bilateral_srgb,
                group.points[start:stop],
            )
            tasks.append((sub, [todo[m] for m in members[start:stop]]))
    skipped = len(points) - len(todo)
    label = f"{stage} ({skipped} already done)" if skipped else stage
    bar = progress(label, len(todo)) if progress is not None and todo else None
    func = functools.partial(
        _score_task, samples=samples, num_classes=num_classes, ignore_index=ignore_index
    )
    try:
        for (_, indices), confusions in process_map(
            func, tasks, jobs=jobs, threads=1, help_locally=True, start="auto"
        ):
            for i, conf in zip(indices, confusions):
                scores = scores_from_confusion(torch.from_numpy(conf))
                log.append(
                    {
                        "key": keys[i],
                        "stage": stage,
                        "params": points[i],
                        "miou": scores["miou"],
                        "pixel_acc": scores["pixel_acc"],
                        "confusion": conf.tolist(),
                    }
                )
            if bar is not None:
                bar.update(len(indices))
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for k, p in zip(keys, points):
        row = dict(log.get(k))  # type: ignore[arg-type]
        row["stage"], row["params"] = stage, p
        rows.append(row)
    return rows


def _score_task(
    task: tuple[ScoreGroup, list[int]], samples, num_classes: int, ignore_index: int
) -> list[np.ndarray]:
    """One task, single-threaded so results do not depend on the number of processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return score_group(task[0], samples, num_classes, ignore_index)
    finally:
        torch.set_num_threads(threads)


def select_best(
    rows: Sequence[dict], axes: Mapping[str, Sequence[Any]], tolerance: float = TOLERANCE
) -> dict:
    """The chosen row among grid ``rows`` (see the module docstring for the rule)."""
    if not rows:
        raise ValueError("grid: no points to choose from")
    names = [n for n in axes if len(axes[n]) > 1]
    position = {}
    for i, row in enumerate(rows):
        position[tuple(_index(axes[n], row["params"][n]) for n in names)] = i
    mious = [r["miou"] if r["miou"] is not None else -1.0 for r in rows]
    top = max(mious)

    def robust(i: int) -> float:
        here = tuple(_index(axes[n], rows[i]["params"][n]) for n in names)
        values = [mious[i]]
        for d in range(len(names)):
            for step in (-1, 1):
                other = list(here)
                other[d] += step
                j = position.get(tuple(other))
                if j is not None:
                    values.append(mious[j])
        return float(np.mean(values))

    candidates = [i for i, m in enumerate(mious) if m >= top - tolerance]
    chosen = max(candidates, key=lambda i: (robust(i), mious[i], -i))
    return rows[chosen]


def _index(values: Sequence[Any], value: Any) -> int:
    """Rank of ``value`` among the axis values sorted numerically (grid neighbours)."""
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = list(values)
    return ordered.index(value)
