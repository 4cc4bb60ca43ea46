"""torchrun with 2 gloo processes runs the contextual recipe (asynchronous Pairwise-Net updates
with gradients averaged over the processes, batch-norm statistics from rank 0)."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_settings import FAST, run_torchrun

from deepcrf.recipes import load_run, resolve_config


@pytest.mark.slow
def test_two_gloo_processes_train_the_contextual_model(voc_tree, tmp_path):
    sets = [*FAST, "train.steps=2", "train.batch_size=4", "data.crop_size=48",
            "optim.edges_per_update=300", "train.device=cpu"]  # fmt: skip
    config = resolve_config("contextual", "tiny", sets, data_root=str(voc_tree))
    done = run_torchrun(config, tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    entries = [
        json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    ]
    assert any(e.get("world") == 2 for e in entries)
    model = load_run(tmp_path / "ddp").model
    assert model.relations == ("surrounding", "above_below")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    with torch.no_grad():
        q = model(torch.randn(1, 3, 48, 48))
    assert torch.allclose(q.sum(1), torch.ones_like(q[:, 0]), atol=1e-5)
