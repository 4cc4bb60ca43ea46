"""torchrun with 2 gloo processes trains exactly what 1 process trains on the same global batch."""

from __future__ import annotations

import pytest
from recipe_settings import FAST, run_torchrun
from safetensors.torch import load_file

from deepcrf.recipes import main, resolve_config


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(voc_tree, tmp_path):
    # 2 of the 8 training images held out: 6 split evenly over 2 processes (an odd count
    # would make DistributedSampler repeat an image that one process does not see)
    sets = [*FAST, "train.steps=2", "train.batch_size=4", "model.options.dropout=0.0",
            "optim.name=sgd", "optim.momentum=0.9", "train.device=cpu",
            "data.holdout=2"]  # fmt: skip
    config = resolve_config("deeplab", "tiny", sets, data_root=str(voc_tree))
    done = run_torchrun(config, tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    main(config, tmp_path / "one")
    a = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    log = (tmp_path / "ddp" / "log.jsonl").read_text()
    assert '"world": 2' in log
