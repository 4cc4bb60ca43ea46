"""Commands that allow it end the process without the interpreter's teardown once they are
done (``deepcrf.cli.exit_now``): the summary still reaches a pipe, outputs are complete,
atexit handlers run, exit statuses are kept, and in-process calls of ``main`` return."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepcrf
from deepcrf.cli import main

SOURCE = str(Path(deepcrf.__file__).resolve().parents[1])  # this checkout, not an install


def _folders(tmp_path: Path, count: int = 3) -> tuple[Path, Path]:
    cams, images = tmp_path / "cams", tmp_path / "images"
    cams.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(images / f"im{i}.png")
        cam = rng.random((1, 24, 32)).astype(np.float32)
        np.save(cams / f"im{i}.npy", {"keys": np.array([i]), "high_res": cam})
    return cams, images


def _command(cams: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        # an atexit handler registered by the program must still run
        "import atexit, sys; atexit.register(lambda: print('atexit ran', file=sys.stderr)); "
        "from deepcrf.cli import main; sys.exit(main())",
        "pseudo-label",
        "--cams",
        str(cams),
        "--images",
        str(images),
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize("fast", ["1", "0"])
def test_a_fast_exit_keeps_output_status_and_atexit(tmp_path, fast):
    cams, images = _folders(tmp_path)
    env = {**os.environ, "PYTHONPATH": SOURCE, "DEEPCRF_FAST_EXIT": fast}

    def run(*args):
        return subprocess.run(
            _command(cams, images, *args), env=env, capture_output=True, text=True, timeout=300
        )

    done = run(tmp_path / "out", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "pseudo-labelled 3 images" in done.stdout  # flushed into the pipe
    assert "atexit ran" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png", "im1.png", "im2.png"]
    # a failure keeps its status and message
    bad = run(tmp_path / "bad", "--shard", "3/2")
    assert bad.returncode == 1
    assert "--shard" in bad.stderr and "atexit ran" in bad.stderr


def test_main_called_in_process_returns(tmp_path, capsys):
    cams, images = _folders(tmp_path, 1)
    args = ["pseudo-label", "--cams", str(cams), "--images", str(images)]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "pseudo-labelled 1 images" in capsys.readouterr().out
