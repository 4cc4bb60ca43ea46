"""A refine run killed at random moments leaves no half-written output, and the next run
removes its temporaries and completes (issue 14, item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepcrf.fileio import TEMP_MARKER

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "deepcrf", "refine", *args]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _check_outputs_whole(out: Path, marg: Path, shape: tuple[int, int], labels: int) -> set[str]:
    """Every output present under its final name is complete; returns the finished stems."""
    pngs = {p.stem for p in out.glob("*.png") if not p.name.startswith(".")}
    npys = {p.stem for p in marg.glob("*.npy") if not p.name.startswith(".")}
    for stem in pngs:
        assert np.asarray(Image.open(out / f"{stem}.png")).shape == shape
    for stem in npys:
        assert np.load(marg / f"{stem}.npy").shape == (labels, *shape)
    return pngs & npys


@pytest.mark.slow
def test_kills_at_random_moments_leave_whole_outputs(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "probs").mkdir()
    shape, labels = (96, 128), 4
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / f"s{i}.png"
        )
        p = rng.random((labels, *shape)).astype(np.float32)
        np.save(tmp_path / "probs" / f"s{i}.npy", p / p.sum(0))
    inputs = {p: p.read_bytes() for p in sorted((tmp_path / "imgs").iterdir())}
    inputs.update({p: p.read_bytes() for p in sorted((tmp_path / "probs").iterdir())})
    args = ["imgs", "--probs", "probs", "--out", "out", "--save-probs", "marg"]
    args += ["--iterations", "3"]
    for delay in (1.5, 3.0, 4.5):
        proc = _run(args, tmp_path)
        time.sleep(delay + rng.random())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for folder in ("out", "marg"):
            (tmp_path / folder).mkdir(exist_ok=True)
        _check_outputs_whole(tmp_path / "out", tmp_path / "marg", shape, labels)
    proc = _run(args, tmp_path)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    done = _check_outputs_whole(tmp_path / "out", tmp_path / "marg", shape, labels)
    assert done == {f"s{i}" for i in range(6)}
    for folder in ("out", "marg"):
        assert not [p for p in (tmp_path / folder).iterdir() if TEMP_MARKER in p.name]
    assert all(p.read_bytes() == data for p, data in inputs.items())
    for i in range(6):
        q = np.load(tmp_path / "marg" / f"s{i}.npy")
        assert np.array_equal(q.argmax(0), np.asarray(Image.open(tmp_path / "out" / f"s{i}.png")))
