"""process_map(start="auto"): one-thread workers are forked (no start-up cost), others spawned."""

from __future__ import annotations

import os
import sys

import pytest

from deepcrf.parallel import fork_is_safe, process_map

_STATE = {"value": "as imported"}


def _state(item: int) -> tuple[int, str, int]:
    return item, _STATE["value"], os.getpid()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork on Linux")


def test_fork_is_safe_only_for_one_thread_workers():
    assert not fork_is_safe(2)
    assert fork_is_safe(1) == sys.platform.startswith("linux")


@linux_only
def test_auto_forks_one_thread_workers(monkeypatch):
    # a forked worker sees this process's memory, a spawned one the module as imported
    monkeypatch.setitem(_STATE, "value", "set at run time")
    results = list(process_map(_state, list(range(6)), jobs=2, threads=1, start="auto"))
    assert sorted(item for item, _ in results) == list(range(6))
    assert {value for _, (_, value, _) in results} == {"set at run time"}
    assert os.getpid() not in {pid for _, (_, _, pid) in results}


@linux_only
def test_auto_spawns_multi_thread_workers(monkeypatch):
    monkeypatch.setitem(_STATE, "value", "set at run time")
    results = list(process_map(_state, list(range(4)), jobs=2, threads=2, start="auto"))
    assert {value for _, (_, value, _) in results} == {"as imported"}


def test_bad_start_method_is_named():
    with pytest.raises(ValueError, match="start: expected one of"):
        list(process_map(_state, [1, 2], jobs=2, start="fork"))
