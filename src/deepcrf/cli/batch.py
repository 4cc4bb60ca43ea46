"""The folder-run loop shared by the batch commands (``refine`` folders, ``pseudo-label``).

``run_batch`` takes the work items of a whole folder and does the rest the same way for
every command: keep the items of this ``--shard i/n`` (a split by name that machines compute
independently), skip items whose output already exists (a killed run resumes; ``--overwrite``
redoes them), clear the temporaries a killed run left for those outputs, run the rest in
``--jobs`` worker processes that persist across items (``deepcrf.parallel``; forked, at no
start-up cost, when each gets one thread, else spawned),
show a progress bar whose images/s counts only the items processed, and print a summary.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepcrf.cli.progress import progress, summary
from deepcrf.fileio import outputs_complete, remove_stale_temps
from deepcrf.parallel import parse_shard, process_map, shard

__all__ = [
    "BatchItem",
    "BatchSummary",
    "add_batch_arguments",
    "ends_evenly",
    "run_batch",
    "summary_line",
]


@dataclass(frozen=True)
class BatchItem:
    """One unit of work: its name (the shard key), input files and output file (plus
    ``extra`` outputs written with it as a unit; the item is done when all exist)."""

    name: str
    inputs: tuple[Path, ...]
    output: Path
    extra: tuple[Path, ...] = ()

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every output of the item."""
        return (self.output, *self.extra)


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    total: int  # items in the whole folder
    selected: int  # items of this shard
    done: int  # processed now
    skipped: int  # outputs already present
    seconds: float

    @property
    def rate(self) -> float:
        """Processed items per second (skipped items excluded)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


def add_batch_arguments(parser: Any) -> None:
    """``--jobs``, ``--shard`` and ``--overwrite`` for a folder command."""
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="i/n",
        help="process only shard i of n (0 <= i < n), a split by file name for n machines",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")


def _named(work: Callable[[BatchItem], Any], item: BatchItem) -> Any:
    """``work(item)`` with the item's name in any error message (runs in the worker)."""
    try:
        return work(item)
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        raise ValueError(f"{item.name}: {exc}") from None


def run_batch(
    items: Sequence[BatchItem],
    work: Callable[[BatchItem], Any],
    *,
    jobs: int = 1,
    shard_spec: str | None = None,
    overwrite: bool = False,
    desc: str = "images",
    show: bool = True,
    order: Callable[[BatchItem], Any] | None = None,
    cost: Callable[[BatchItem], float] | None = None,
) -> BatchSummary:
    """Run ``work`` (picklable, writes ``item.output`` atomically) over this shard's items.

    ``order`` (a sort key, called here) sets the order in which the items to do are handed
    out, e.g. grouped by image size so that a worker meets each size's cached spatial
    lattice in one stretch; with ``cost`` (an item's estimated work) the groups of equal
    keys are then laid out by ``ends_evenly``. Neither ever changes an output. Default: the
    given order.

    Raises the first failure, naming the item; outputs written before it stay and a rerun
    resumes after them.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    index, count = parse_shard(shard_spec)
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("items: duplicate names")
    mine = set(shard(names, index, count))
    selected = [item for item in items if item.name in mine]
    mine_outputs = [path for item in selected for path in item.outputs]
    for folder in {path.parent for path in mine_outputs}:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder, only={p.name for p in mine_outputs if p.parent == folder})
    todo = [item for item in selected if overwrite or not outputs_complete(item.outputs)]
    if order is not None:
        todo.sort(key=order)  # stable: ties keep the given order
        if cost is not None:
            todo = ends_evenly(todo, order, cost)
    skipped = len(selected) - len(todo)
    start = time.perf_counter()
    results = process_map(
        functools.partial(_named, work), todo, jobs, help_locally=True, start="auto"
    )
    if show:
        results = progress(_Counted(results, len(todo)), desc, skipped)
    done = sum(1 for _ in results)
    return BatchSummary(len(items), len(selected), done, skipped, time.perf_counter() - start)


def ends_evenly(
    items: Sequence[BatchItem],
    group: Callable[[BatchItem], Any],
    cost: Callable[[BatchItem], float],
) -> list[BatchItem]:
    """``items`` laid out for claiming from both ends of the list (``process_map`` with
    ``help_locally``: workers take from the front, this process from the back).

    The items of a group (equal ``group`` keys) stay together, in groups of decreasing mean
    ``cost`` placed alternately at the front and at the back, each group's costlier items
    first from its end. Both ends then work from large to small items and meet among the
    cheapest, so the processes finish close together instead of one idling through the
    other's last large item. Ties keep the given order.
    """
    groups: dict[Any, list[BatchItem]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    costs = {id(item): float(cost(item)) for item in items}
    ranked = sorted(
        groups.values(), key=lambda members: -sum(costs[id(m)] for m in members) / len(members)
    )
    front: list[BatchItem] = []
    back: list[BatchItem] = []  # in the order the back end takes them
    for rank, members in enumerate(ranked):
        members = sorted(members, key=lambda m: -costs[id(m)])
        (front if rank % 2 == 0 else back).extend(members)
    return front + back[::-1]


class _Counted:
    """An iterator with a known length (the progress bar's total)."""

    def __init__(self, iterator: Iterator, length: int) -> None:
        self.iterator, self.length = iterator, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        return self.iterator


def summary_line(verb: str, result: BatchSummary, shard_spec: str | None, out: Path) -> str:
    """The end-of-run summary, e.g. ``refined 3 images into out/ (...); shard 0/2: 3 of 5
    files; 2.1 s, 1.43 images/s``."""
    text = summary(verb, result.done, result.skipped, out)
    if shard_spec is not None:
        text += f"; shard {shard_spec}: {result.selected} of {result.total} files"
    return text + f"; {result.seconds:.1f} s, {result.rate:.2f} images/s"
