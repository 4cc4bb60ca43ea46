"""A torchrun worker (its own session, like torchrun's) dies when its launcher is SIGKILLed
instead of training on and racing a later ``--resume``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from recipe_settings import SRC

WORKER = (
    "import time\n"
    "from deepcrf.recipes.distributed import exit_with_parent\n"
    "exit_with_parent(0.05)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
LAUNCHER = (
    "import subprocess, sys\n"
    "worker = subprocess.Popen([sys.executable, '-c', sys.argv[1]], start_new_session=True)\n"
    "print(worker.pid, flush=True)\n"
    "worker.wait()\n"
)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(x for x in status.read_text().splitlines() if x.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return False
    return " Z " not in state and "zombie" not in state


def test_worker_is_killed_with_its_launcher():
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, WORKER], env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    worker = int(launcher.stdout.readline())
    try:
        assert launcher.stdout.readline().strip() == "ready"
        assert _alive(worker)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived its SIGKILLed launcher"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
        launcher.stdout.close()
