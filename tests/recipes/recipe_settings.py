"""Settings and helpers shared by the recipe tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deepcrf.recipes.config import save_yaml

SRC = Path(__file__).resolve().parents[2] / "src"

#: --set overrides that make any recipe's tiny preset run in about a second
FAST = [
    "train.steps=2",
    "train.batch_size=2",
    "train.save_every=0",
    "train.progress=false",
    "data.crop_size=40",
    "data.scale_min=1.0",
    "data.scale_max=1.0",
    "crf_search.images=2",
]


def run_torchrun(config, out: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """``deepcrf train`` on ``config`` under ``torchrun --nproc_per_node processes`` (gloo, one
    thread each, this checkout's sources), the run folder at ``out``."""
    yaml_file = save_yaml(config, out.parent / f"{out.name}-config.yaml")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(processes), "-m", "deepcrf", "train", str(yaml_file), "--out", str(out),
           "--quiet"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
