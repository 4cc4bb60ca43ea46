"""torchrun with 2 gloo processes trains exactly what 1 process trains on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_settings import FAST
from safetensors.torch import load_file

from deepcrf.recipes import main, resolve_config
from deepcrf.recipes.config import save_yaml

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(voc_tree, tmp_path):
    sets = [*FAST, "train.steps=2", "train.batch_size=4", "model.options.dropout=0.0",
            "optim.name=sgd", "optim.momentum=0.9", "train.device=cpu"]  # fmt: skip
    config = resolve_config("deeplab", "tiny", sets, data_root=str(voc_tree))
    yaml_file = save_yaml(config, tmp_path / "config.yaml")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "deepcrf", "train", str(yaml_file), "--out", str(tmp_path / "ddp"),
           "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    main(config, tmp_path / "one")
    a = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    log = (tmp_path / "ddp" / "log.jsonl").read_text()
    assert '"world": 2' in log
