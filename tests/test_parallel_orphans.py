"""process_map's workers end when the process that started them is killed with SIGKILL
(no pool shutdown happens then; idle workers used to wait for work forever)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import deepcrf

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from deepcrf.parallel import process_map

    def task(folder):
        open(os.path.join(folder, str(os.getpid())), "w").close()
        time.sleep(120)

    if __name__ == "__main__":
        start = sys.argv[2]
        for _ in process_map(task, [sys.argv[1]] * 2, jobs=2, threads=1, start=start):
            pass
    """
)


def _alive(pid: int) -> bool:
    """Running (an exited process that no init reaped yet is a zombie, state Z: not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL semantics checked on Linux")
@pytest.mark.parametrize("start", ["spawn", "auto"])  # auto: forked one-thread workers
def test_workers_end_with_a_killed_parent(tmp_path, start):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    folder = tmp_path / "pids"
    folder.mkdir()
    source = str(Path(deepcrf.__file__).resolve().parents[1])  # this checkout, not an install
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, str(script), str(folder), start], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(name) for name in os.listdir(folder)]
        assert len(workers) == 2, "the workers did not start"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # do not leave them behind if the check fails
        os.kill(pid, signal.SIGKILL)
    assert not left
