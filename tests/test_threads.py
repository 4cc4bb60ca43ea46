"""Thread policy: budget, load detection, per-call choice and restoring the caller's setting."""

import os
import subprocess
import sys
import time

import pytest
import torch

from deepcrf import threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "auto"), ("auto", "auto"), ("FIXED", "fixed"), ("3", 3)]
)
def test_policy_from_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("DEEPCRF_THREADS", raising=False)
    else:
        monkeypatch.setenv("DEEPCRF_THREADS", value)
    assert threads.thread_policy() == expected


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_policy_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("DEEPCRF_THREADS", value)
    with pytest.raises(ValueError, match="DEEPCRF_THREADS"):
        threads.choose_threads()


def test_auto_gives_way_to_busy_processes(monkeypatch, restore_threads):
    monkeypatch.setenv("DEEPCRF_THREADS", "auto")
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    torch.set_num_threads(4)
    for others, expected in [(0, 4), (1, 3), (3, 1), (9, 1)]:
        monkeypatch.setattr(threads, "busy_elsewhere", lambda o=others: o)
        assert threads.choose_threads() == expected
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: None)  # no /proc: the budget
    assert threads.choose_threads() == 4
    torch.set_num_threads(2)  # the caller's setting caps the choice
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    assert threads.choose_threads() == 2
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)  # affinity / quota cap it too
    assert threads.choose_threads() == 1


def test_fixed_and_explicit_counts_ignore_load(monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 99)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    torch.set_num_threads(2)
    monkeypatch.setenv("DEEPCRF_THREADS", "fixed")
    assert threads.choose_threads() == 2
    monkeypatch.setenv("DEEPCRF_THREADS", "3")
    assert threads.choose_threads() == 3


def test_adaptive_sets_once_per_outer_call_and_restores(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    choices = iter([1, 2])
    monkeypatch.setattr(threads, "choose_threads", lambda: next(choices))
    seen = []

    @threads.adaptive
    def inner():
        seen.append(("inner", torch.get_num_threads()))

    @threads.adaptive
    def outer():
        seen.append(("outer", torch.get_num_threads()))
        inner()

    outer()
    assert seen == [("outer", 1), ("inner", 1)]  # the inner call kept the outer choice
    assert torch.get_num_threads() == 2
    inner()  # a new outermost call decides again
    assert seen[-1] == ("inner", 2) and torch.get_num_threads() == 2


def test_adaptive_restores_after_an_exception(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "choose_threads", lambda: 1)

    @threads.adaptive
    def fails():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails()
    assert torch.get_num_threads() == 2
    seen = []
    threads.adaptive(lambda: seen.append(torch.get_num_threads()))()
    assert seen == [1]  # the failed call did not leave the nesting flag set


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux /proc")
def test_busy_process_is_detected():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.busy_elsewhere() >= 1  # runnable whether or not it holds a core now
    finally:
        busy.kill()
        busy.wait()


def test_refine_runs_under_the_policy(monkeypatch, restore_threads):
    import numpy as np

    from deepcrf import refine

    torch.set_num_threads(2)
    seen = []
    real = threads.use_threads

    def spy(count):
        seen.append(count)
        return real(count)

    monkeypatch.setattr(threads, "use_threads", spy)
    monkeypatch.setattr(threads, "choose_threads", lambda: 1)
    probs = np.full((3, 8, 9), 1 / 3, dtype=np.float32)
    refine(probs, np.zeros((8, 9, 3), np.uint8), iterations=2)
    assert seen == [1] and torch.get_num_threads() == 2


def test_recheck_drops_to_one_thread_after_two_crowded_checks(monkeypatch, restore_threads):
    monkeypatch.setenv("DEEPCRF_THREADS", "auto")
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "choose_threads", lambda: 2)
    monkeypatch.setattr(threads, "team_run_delay", lambda: None)  # no schedstat: loadavg
    runnable = iter([3, 2, 3, 3])  # crowded, free, crowded, crowded
    monkeypatch.setattr(threads, "_runnable_tasks", lambda: next(runnable))
    seen = []

    @threads.adaptive
    def loop():
        for _ in range(4):
            seen.append(threads.recheck())

    loop()
    assert seen == [2, 2, 2, 1]  # one crowded check alone does not count
    assert torch.get_num_threads() == 2  # the caller's setting is back
    assert threads.recheck() == 2  # outside an adaptive call: nothing changes


def test_recheck_leaves_fixed_policies_alone(monkeypatch, restore_threads):
    monkeypatch.setenv("DEEPCRF_THREADS", "fixed")
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "_runnable_tasks", lambda: 9)

    @threads.adaptive
    def loop():
        return [threads.recheck() for _ in range(3)]

    assert loop() == [2, 2, 2]


def test_mean_field_rechecks_before_every_iteration(monkeypatch, restore_threads):
    from deepcrf.crf import Kernel, Pairwise, mean_field

    calls = []
    monkeypatch.setattr("deepcrf.crf.recheck", lambda: calls.append(1))
    features = torch.rand(30, 2)
    pairwise = Pairwise([Kernel(features, 1.0)], 3)
    mean_field(torch.randn(30, 3), pairwise, 4)
    assert len(calls) == 4  # the first one judges the set-up (lattice build, normalisation)


def test_lattice_build_has_checkpoints(monkeypatch, restore_threads):
    from deepcrf.lattice import build_lattice

    calls = []
    monkeypatch.setattr("deepcrf.lattice.recheck", lambda: calls.append(1))
    build_lattice(torch.rand(50, 3) * 4)
    assert len(calls) >= 3


class _FakeClock:
    """perf_counter advancing by given steps at each reading, and the team's run delay
    growing with them."""

    def __init__(self, steps):
        self.steps = iter(steps)  # (seconds of wall time, share of 2 threads waiting)
        self.wall, self.delay = 100.0, 0

    def now(self):
        step = next(self.steps, None)
        if step is not None:
            seconds, share = step
            self.wall += seconds
            self.delay += int(seconds * 2 * share * 1e9)
        return self.wall

    def run_delay(self):
        return self.delay


def _run_checkpoints(monkeypatch, steps, checks):
    monkeypatch.setenv("DEEPCRF_THREADS", "auto")
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "choose_threads", lambda: 2)
    clock = _FakeClock([(0.0, 0.0), *steps])  # the first reading is the call's start
    monkeypatch.setattr(threads, "team_run_delay", clock.run_delay)
    monkeypatch.setattr(threads.time, "perf_counter", clock.now)
    monkeypatch.setattr(threads, "_runnable_tasks", lambda: 99)  # must not be consulted
    seen = []

    @threads.adaptive
    def loop():
        for _ in range(checks):
            seen.append(threads.recheck())

    loop()
    assert torch.get_num_threads() == 2  # the caller's setting is back
    return seen


def test_waiting_for_a_cpu_at_two_checkpoints_drops_to_one_thread(monkeypatch, restore_threads):
    # one busy process on 2 cores: each of 3 runnable tasks waits about a third of the time
    seen = _run_checkpoints(monkeypatch, [(0.02, 0.33)] * 3, 3)
    assert seen == [2, 1, 1]
    assert threads.last_call() == (2, 1)  # started on 2 threads, ended on 1


def test_quiet_team_and_single_bursts_keep_both_threads(monkeypatch, restore_threads):
    quiet = [(0.02, 0.01), (0.02, 0.4), (0.02, 0.02), (0.02, 0.4), (0.02, 0.0)]
    assert _run_checkpoints(monkeypatch, quiet, 5) == [2, 2, 2, 2, 2]
    assert threads.last_call() == (2, 2)


def test_short_windows_are_judged_with_the_next(monkeypatch, restore_threads):
    # a 1 ms window is too short: no verdict, and its wait counts in the next window
    steps = [(0.001, 0.9), (0.02, 0.3), (0.02, 0.3)]
    assert _run_checkpoints(monkeypatch, steps, 3) == [2, 2, 1]


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs schedstat")
def test_team_run_delay_reads_this_process():
    first = threads.team_run_delay()
    assert isinstance(first, int) and first >= 0
    assert threads.team_run_delay() >= first  # cumulative


def test_vector_math_is_warmed_on_one_thread_at_import():
    """``import deepcrf`` runs torch's vector math (sqrt, exp, log) once, on inputs too
    small to be split between threads, before any deepcrf computation: the guard against
    the first multi-threaded sqrt of a process coming out inexact (see
    ``threads.warm_vector_math``)."""
    code = (
        "import torch\n"
        "calls = []\n"
        "for name in ('sqrt', 'exp', 'log'):\n"
        "    def spy(x, *a, _f=getattr(torch, name), _n=name, **k):\n"
        "        calls.append((_n, x.numel()))\n"
        "        return _f(x, *a, **k)\n"
        "    setattr(torch, name, spy)\n"
        "import deepcrf\n"
        "print(calls[:3])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == "[('sqrt', 4), ('exp', 4), ('log', 4)]"


def test_warm_vector_math_leaves_threads_alone():
    before = torch.get_num_threads()
    threads.warm_vector_math()
    assert torch.get_num_threads() == before
