"""process_map(help_locally=True): this process works too, and no item runs twice."""

from __future__ import annotations

import os
import time

from deepcrf.parallel import process_map


def _pid_of(item: int) -> tuple[int, int]:
    time.sleep(0.05)
    return item * item, os.getpid()


def test_local_help_runs_every_item_once():
    items = list(range(12))
    results = list(process_map(_pid_of, items, jobs=2, help_locally=True))
    assert sorted(item for item, _ in results) == items
    assert all(value == item * item for item, (value, _) in results)
    pids = [pid for _, (_, pid) in results]
    # a worker takes seconds to start: this process has taken items from the back meanwhile
    assert os.getpid() in pids
    local = [item for item, (_, pid) in results if pid == os.getpid()]
    assert max(local) == items[-1]


def _square(item: int) -> int:
    return item * item


def test_many_quick_items_each_come_back_once():
    items = list(range(400))
    results = list(process_map(_square, items, jobs=2, help_locally=True))
    assert sorted(item for item, _ in results) == items
    assert all(value == item * item for item, value in results)


def _slow_first(item: int) -> int:
    time.sleep(3.0 if item == 0 else 0.05)
    return os.getpid()


def test_no_item_waits_behind_a_busy_worker():
    # the worker claims item 0 (3 s); the pool queues tasks ahead of it, but items are
    # claimed only when a process is ready, so this process runs all the others instead
    # of leaving some queued behind item 0 (which made the end of a run one-sided)
    items = list(range(8))
    results = dict(process_map(_slow_first, items, jobs=2, help_locally=True, start="auto"))
    assert sorted(results) == items
    elsewhere = [item for item, pid in results.items() if pid != os.getpid()]
    assert len(elsewhere) <= 1, elsewhere
