"""How many CPU threads deepcrf uses: the CPUs it may use, less those busy elsewhere now.

torch runs its CPU kernels on an OpenMP team whose threads meet at a barrier after every
operation (dozens per mean-field iteration). When another process holds one of the cores,
the thread that shares it arrives late at every barrier and the whole team waits: on a
2-core machine with one competing busy process, 2 threads took 2.2x the time of 1 thread.
So each deepcrf entry point (``refine``, ``build_lattice``, ``mean_field``) picks its
thread count when it is called (``choose_threads``):

    threads = min(budget, max(1, cpu_count - runnable tasks of other processes))

where ``budget = min(torch.get_num_threads(), parallel.available_cpus())`` (affinity mask,
cgroup quota, ``OMP_NUM_THREADS``, ``torch.set_num_threads`` and the share a
``parallel.process_map`` worker got all lower it) and the runnable tasks come from
``/proc/loadavg``'s instantaneous count minus this process's own running threads (median
of 3 samples, about 0.3 ms). The choice is made once per outermost call and restored
afterwards, so a caller's ``torch.set_num_threads`` setting is left as it was.

Load that appears during a call, or a busy process the start missed, is caught at
checkpoints (``recheck``: between the stages of a lattice build and between mean-field
iterations). Where Linux keeps scheduler statistics (``/proc/self/task/*/schedstat``),
a checkpoint measures contention directly: the time this process's threads spent
runnable but waiting for a CPU since the last checkpoint, as a share of the team's
thread-time. On a quiet machine that share is near 0 (wake-up latencies); with one
competing busy process on 2 cores, 3 runnable tasks share 2 CPUs and each waits about
a third of the time. A share above ``WAIT_SHARE`` at two consecutive checkpoints (a
single burst from a transient task does not count) drops the rest of the call to 1
thread, so a wrong start costs at most two short windows (a few ms to tens of ms) of
a 2-thread team fighting a busy core. Without schedstat the checkpoint reads
``/proc/loadavg`` (~10 us) instead: more runnable tasks than the team's threads at two
consecutive checks means someone else wants a core.

Environment: ``DEEPCRF_THREADS`` = ``auto`` (default, the policy above), ``fixed``
(use ``torch.get_num_threads()`` as set, no adaptation) or an integer n (exactly n
threads). Where ``/proc`` is missing (macOS, Windows) ``auto`` means ``fixed``. The load
seen through ``/proc/loadavg`` is the host's (or VM's): inside a container with a CPU
quota on a large host, contention from tasks in the same container is not detected.
OpenMP's own ``OMP_WAIT_POLICY=PASSIVE`` is honoured by torch but must be set before
torch is imported; it is not needed with this policy (and costs ~15% on a quiet machine).
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from deepcrf.parallel import available_cpus

__all__ = [
    "busy_elsewhere",
    "choose_threads",
    "cpu_budget",
    "last_call",
    "recheck",
    "team_run_delay",
    "thread_policy",
    "use_threads",
    "warm_vector_math",
]

F = TypeVar("F", bound=Callable)

_ENV = "DEEPCRF_THREADS"
_SAMPLES = 3
_local = threading.local()

#: Share of the team's thread-time spent waiting for a CPU above which a checkpoint counts
#: as crowded (quiet: ~0.01; one busy process competing for one of 2 cores: ~0.33).
WAIT_SHARE = 0.12
_MIN_WINDOW_S = 0.003  # shorter windows are merged into the next (too few ticks to judge)


def warm_vector_math() -> None:
    """Run torch's CPU vector math (float ``sqrt``, ``exp``, ``log``: MKL's VML) once on
    this thread alone, before any multi-threaded use; a few microseconds, run at import.

    In about 1 in 100 fresh processes on 2 threads (7 of ~920 in stress tests) the first
    multi-threaded ``1 / sqrt(x)`` of the process came out on the calling thread's half of
    the values with about 12 correct bits instead of 24, while the same call later in
    the process was exact: the first image's spatial-kernel normalisers were off by up
    to 3e-4 relative and its marginals by up to 5.5e-4. Which part of torch or MKL goes
    wrong is not known; with this warm-up first none of 594 processes showed it."""
    probe = torch.ones(4)
    torch.sqrt(probe)
    torch.exp(probe)
    torch.log(probe)


warm_vector_math()


def thread_policy() -> str | int:
    """``"auto"``, ``"fixed"`` or a thread count, from ``DEEPCRF_THREADS`` (default auto)."""
    value = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if value in ("auto", "fixed"):
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{_ENV}: expected 'auto', 'fixed' or an integer >= 1, got {value!r}")
    return count


def cpu_budget() -> int:
    """The most threads deepcrf may use: torch's setting within the CPUs this process may use."""
    return max(1, min(torch.get_num_threads(), available_cpus()))


def _runnable_tasks() -> int:
    with open("/proc/loadavg") as handle:  # "0.52 0.40 0.31 3/412 12345": 3 runnable now
        return int(handle.read().split()[3].split("/")[0])


def _own_running_threads() -> int:
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                stat = handle.read()
        except OSError:  # the thread ended meanwhile
            continue
        count += stat[stat.rindex(")") + 2] == "R"
    return count


def team_run_delay() -> int | None:
    """Nanoseconds this process's threads have spent runnable but waiting for a CPU, summed
    over its threads (``/proc/self/task/*/schedstat``); None where Linux does not keep it."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    total, seen = 0, 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[1])  # "cpu_ns wait_ns timeslices"
            seen += 1
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return total if seen else None


def busy_elsewhere(samples: int = _SAMPLES) -> int | None:
    """Runnable tasks of other processes right now (median of samples); None if unknown."""
    try:
        counts = [max(0, _runnable_tasks() - _own_running_threads()) for _ in range(samples)]
    except (OSError, ValueError, IndexError):
        return None
    return int(statistics.median_low(counts))


def choose_threads() -> int:
    """The thread count for a call starting now, by ``DEEPCRF_THREADS`` (see module doc)."""
    policy = thread_policy()
    if isinstance(policy, int):
        return policy
    budget = cpu_budget()
    if policy == "fixed" or budget == 1:
        return budget
    others = busy_elsewhere()
    if others is None:
        return budget
    return max(1, min(budget, (os.cpu_count() or 1) - others))


@contextmanager
def use_threads(count: int) -> Iterator[int]:
    """Run the body with ``torch.set_num_threads(count)``; the previous setting is restored."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:  # also after a ``recheck`` inside
            torch.set_num_threads(previous)


def adaptive(func: F) -> F:
    """Run ``func`` with ``choose_threads()`` threads, decided once per outermost call."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if getattr(_local, "active", False):
            return func(*args, **kwargs)
        _local.active = True
        _local.strikes = 0
        _local.auto = thread_policy() == "auto"
        count = final = None
        try:
            with use_threads(choose_threads()) as count:
                _local.mark = _checkpoint() if _local.auto and count > 1 else None
                try:
                    return func(*args, **kwargs)
                finally:
                    final = torch.get_num_threads()
        finally:
            _local.active = False
            _local.last = (count, final)

    return wrapper  # type: ignore[return-value]


def last_call() -> tuple[int | None, int | None]:
    """(threads chosen at the start, threads at the end) of this thread's last outermost
    ``adaptive`` call: fewer at the end means a checkpoint found the team crowded. For
    benchmarks and diagnostics; (None, None) before any call."""
    return getattr(_local, "last", (None, None))


def _checkpoint() -> tuple[float, int] | None:
    """(wall time, team run delay) now, or None without scheduler statistics."""
    delay = team_run_delay()
    return None if delay is None else (time.perf_counter(), delay)


def _crowded(count: int) -> bool | None:
    """Whether the ``count``-thread team was crowded since the last checkpoint (see module
    doc); None when the window is still too short to judge."""
    mark = getattr(_local, "mark", None)
    if mark is not None:
        wall = time.perf_counter()
        if wall - mark[0] < _MIN_WINDOW_S:  # judged with the next window (no /proc read)
            return None
        delay = team_run_delay()
        if delay is None:
            _local.mark = None
        else:
            _local.mark = (wall, delay)
            return (delay - mark[1]) / ((wall - mark[0]) * 1e9 * count) > WAIT_SHARE
    return _runnable_tasks() > count


def recheck() -> int:
    """A checkpoint of an ``adaptive`` call under the ``auto`` policy: drop to 1 thread for
    the rest of the call once two consecutive checkpoints find the team crowded (threads
    waiting for a CPU, or without schedstat more runnable tasks than threads; see module
    doc). Returns the thread count now in use. Cheap (~50 us); a no-op on 1 thread."""
    count = torch.get_num_threads()
    if count == 1 or not getattr(_local, "active", False) or not getattr(_local, "auto", False):
        return count
    try:
        crowded = _crowded(count)
    except (OSError, ValueError, IndexError):
        return count
    if crowded is None:
        return count
    _local.strikes = _local.strikes + 1 if crowded else 0
    if _local.strikes >= 2:
        torch.set_num_threads(1)  # the outermost ``use_threads`` restores the caller's count
        return 1
    return count
