"""Work over many files: deterministic shards and spawn-safe worker processes.

* ``parse_shard("i/n")`` and ``shard(names, index, count)``: a split by file name that n
  machines (SLURM array jobs, torchrun ranks) compute independently, with no overlap and no
  coordination: a name goes to shard ``crc32(name) % count``.
* ``process_map(func, items, jobs)``: ``func`` over ``items`` in ``jobs`` worker processes,
  each worker with its share of the CPU threads (``threads_per_worker``) so workers divide
  the cores instead of multiplying threads. Results come back as they finish, paired with
  their item, so callers can commit outputs and update a progress bar. ``jobs=1`` runs in
  this process (same results, no pickling). A process claims an item only when it is
  ready to run it (``_Claims``), so a run ends with every process busy until the last
  item instead of some items queued behind a worker's long one.

How workers start: *spawn* (a fresh interpreter, which imports torch again: 1-2 CPU
seconds per worker) or, with ``start="auto"``, *fork* where that is safe, which costs
nothing. Forking a process whose torch has run a multi-threaded OpenMP region and then
running OpenMP teams in the child hangs (the child inherits a thread pool whose threads
did not survive the fork). A worker that runs one thread never starts a team, so fork is
used only when every worker gets one thread (``jobs`` >= the CPUs: the usual folder run),
on Linux, with no CUDA context in this process (a forked child cannot use it).
"""

from __future__ import annotations

import concurrent.futures as futures
import gc
import multiprocessing
import os
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = [
    "START_METHODS",
    "available_cpus",
    "cgroup_cpu_quota",
    "fork_is_safe",
    "parse_shard",
    "process_map",
    "shard",
    "threads_per_worker",
    "watch_parent",
]

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask and a cgroup CPU quota (v1 or v2), if any."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time per period that this process's cgroup may use, or None.

    Reads cgroup v2 ``cpu.max`` ("200000 100000" = 2 CPUs) or v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1 = none), in the process's own cgroup (from
    ``/proc/self/cgroup``) and at the hierarchy's root, the tighter one winning.
    """
    v2_paths, v1_paths = [""], [""]
    try:
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    v2_paths.append(path.strip("/"))
                elif "cpu" in controllers.split(","):
                    v1_paths.append(path.strip("/"))
    except (OSError, ValueError):
        pass
    limits = []
    for path in dict.fromkeys(v2_paths):
        text = _read(os.path.join(root, path, "cpu.max")) or "max"
        limits.append(_ratio(*[*text.split(), "100000"][:2]))
    for path in dict.fromkeys(v1_paths):
        for folder in ("cpu", "cpu,cpuacct"):
            quota = _read(os.path.join(root, folder, path, "cpu.cfs_quota_us"))
            period = _read(os.path.join(root, folder, path, "cpu.cfs_period_us"))
            limits.append(_ratio(quota or "max", period or "100000"))
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _ratio(quota: str, period: str) -> float | None:
    """quota / period, or None for no limit ("max", -1) or unreadable text."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (OSError, ValueError):
        return None


def threads_per_worker(jobs: int, cpus: int | None = None) -> int:
    """Threads each of ``jobs`` workers should use so that together they fill the CPUs."""
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus // max(1, jobs))


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> (0, 1). Errors name ``--shard``."""
    if spec is None:
        return 0, 1
    try:
        index_text, count_text = str(spec).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard: expected i/n with integers 0 <= i < n, got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard: expected i/n with 0 <= i < n, got {spec!r}")
    return index, count


def shard(names: Iterable[str], index: int, count: int) -> list[str]:
    """The names that belong to shard ``index`` of ``count`` (stable across machines)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: expected 0 <= index < count, got {index}/{count}")
    return [n for n in names if zlib.crc32(str(n).encode("utf-8")) % count == index]


def _init_worker(threads: int, func=None, items=None, claims=None) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    # the worker is ours: what it holds now (torch, the task) lives as long as it does, so
    # the collector need not walk it again (a forked worker then never copies the parent's
    # pages for it either); see deepcrf/__init__.py
    gc.freeze()
    _WORKER["task"] = (func, items, claims)
    parent = multiprocessing.parent_process()  # the pool's process, even if already gone
    _exit_with_parent(parent.pid if parent is not None else os.getppid())


_WORKER: dict[str, Any] = {}  # in a worker: (func, items, claims) of its process_map


class _Claims:
    """Which items are still free: workers take the next from the front, the parent (when
    it helps) the next from the back, under one lock shared by the processes. An item is
    claimed when a process is ready to run it, not when a task is queued for it, so no
    item waits in a busy worker's queue while another process is idle (the pool queues a
    task or two ahead of each worker: with items handed out as tasks, a run's last items
    could sit behind a worker's current one while the parent had nothing left to do)."""

    def __init__(self, context, count: int) -> None:
        self.bounds = context.Array("q", [0, count])  # [front, back): the free items

    def take(self, from_back: bool = False) -> int:
        """The index of a free item, now claimed, or -1 when none is left."""
        with self.bounds.get_lock():
            front, back = self.bounds[0], self.bounds[1]
            if front >= back:
                return -1
            if from_back:
                self.bounds[1] = back - 1
                return back - 1
            self.bounds[0] = front + 1
            return front

    def stop(self) -> None:
        """Leave no item free (after a failure: nothing new starts)."""
        with self.bounds.get_lock():
            self.bounds[0] = self.bounds[1]


def _claimed_call() -> tuple[int, Any]:
    """A worker's task: claim the next free item and run it; (-1, None) when none is left."""
    func, items, claims = _WORKER["task"]
    index = claims.take()
    return (index, None) if index < 0 else (index, func(items[index]))


def watch_parent(
    parent: int, end: Callable[[], object], interval: float = 1.0, name: str = "deepcrf-parent"
) -> threading.Thread:
    """Call ``end`` (which ends this process) from a daemon thread once the process
    ``parent`` is gone (this process re-parented); returns the thread. A parent killed with
    SIGKILL cannot stop its workers: pool workers would wait for work forever, torchrun's
    would go on training."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        end()

    thread = threading.Thread(target=watch, name=name, daemon=True)
    thread.start()
    return thread


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this pool worker (status 1) when its parent is gone."""
    watch_parent(parent, lambda: os._exit(1), interval, "deepcrf-parent-watch")


START_METHODS = ("spawn", "auto")


def fork_is_safe(threads: int) -> bool:
    """Whether workers of ``threads`` threads each may be forked from this process (see the
    module docstring): one thread each, Linux, and no CUDA context here."""
    if threads != 1 or not sys.platform.startswith("linux"):
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    torch = sys.modules.get("torch")
    return not (torch is not None and torch.cuda.is_initialized())


def process_map(
    func: Callable[[T], R],
    items: Sequence[T],
    jobs: int = 1,
    threads: int | None = None,
    help_locally: bool = False,
    start: str = "spawn",
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, func(item))`` for every item, in completion order.

    ``func`` must be picklable (a module-level function, or a ``functools.partial`` of one)
    when ``jobs > 1``. An exception in a worker is raised here, after the pending work is
    cancelled; results already yielded stay valid.

    ``help_locally=True`` makes this process one of the ``jobs``: it starts ``jobs - 1``
    workers and works through the items from the end of the list while they start (a
    worker's start-up, importing torch, costs seconds) and take items from the front. No
    item runs twice: this process only takes items no worker has claimed.

    ``start="auto"`` forks the workers when ``fork_is_safe`` (no start-up cost), else
    spawns them; ``"spawn"`` always spawns.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    if start not in START_METHODS:
        raise ValueError(f"start: expected one of {START_METHODS}, got {start!r}")
    jobs = min(jobs, max(1, len(items)))
    if jobs == 1:
        for item in items:
            yield item, func(item)
        return
    per_worker = threads if threads is not None else threads_per_worker(jobs)
    method = "fork" if start == "auto" and fork_is_safe(per_worker) else "spawn"
    context = multiprocessing.get_context(method)
    workers = jobs - 1 if help_locally else jobs
    claims = _Claims(context, len(items))
    initargs = (per_worker, func, list(items), claims)
    with futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=initargs
    ) as pool:
        with warnings.catch_warnings():  # fork starts the workers at the first submit
            # Python >= 3.12 warns about any fork of a process with threads; BLAS's idle
            # pool threads are fork-safe and the workers never start an OpenMP team
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            # one task per item: each claims whichever item is free when it starts
            tasks = [pool.submit(_claimed_call) for _ in items]
        try:
            if help_locally:
                yield from _work_locally(func, items, tasks, claims, per_worker)
            for future in futures.as_completed(tasks):
                index, result = future.result()
                if index >= 0:
                    yield items[index], result
        finally:
            claims.stop()
            for future in tasks:
                future.cancel()


def _work_locally(
    func, items: Sequence, tasks: list, claims: _Claims, threads: int
) -> Iterator[tuple[Any, Any]]:
    """Run free items here, from the back, yielding the workers' finished results in
    between; returns when no item is free. Leaves in ``tasks`` the workers' tasks not yet
    yielded. Finished tasks arrive through done-callbacks, so each item costs O(1) here
    whatever the number of items."""
    import queue

    import torch

    finished: queue.SimpleQueue = queue.SimpleQueue()
    for future in tasks:
        future.add_done_callback(finished.put)  # also called at once for finished ones
    remaining = set(tasks)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        while True:
            while not finished.empty():
                future = finished.get()
                if future in remaining and not future.cancelled():
                    remaining.discard(future)
                    index, result = future.result()
                    if index >= 0:
                        yield items[index], result
            index = claims.take(from_back=True)
            if index < 0:
                return
            yield items[index], func(items[index])
    finally:
        torch.set_num_threads(saved)
        # tasks queued behind the last item find nothing to claim: cancel those not started
        for future in remaining:
            future.cancel()
        tasks[:] = [future for future in tasks if future in remaining and not future.cancelled()]
