"""Early stopping on held-out training images: a run with ``data.holdout`` chooses its CRF
on them, and with ``train.select_every`` ends with its best weights by their mIoU, step 0
(where a second stage starts: the first stage and its CRF) included."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_settings import FAST
from safetensors.torch import load_file

from deepcrf.recipes import ConfigError, main, resolve_config
from deepcrf.recipes import engine as engine_module
from deepcrf.recipes.holdout import HeldOut

SELECT = ["data.holdout=2", "train.select_every=1", "train.steps=3", "optim.lr=0.01"]


def _config(root, *extra: str):
    return resolve_config("deeplab", "tiny", [*FAST, *SELECT, *extra], data_root=str(root))


def _scripted(monkeypatch, scores: list[float]) -> list:
    """Make the held-out evaluations return ``scores`` in turn (val ones stay real)."""
    real, calls = engine_module.evaluate, []

    def evaluate(model, dataset, *args, **kwargs):
        if isinstance(dataset, HeldOut):
            calls.append(len(dataset))
            return {"miou": scores[len(calls) - 1]}
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(engine_module, "evaluate", evaluate)
    return calls


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("scores", "step"), [([0.5, 0.3, 0.5, 0.4], 0), ([0.1, 0.2, 0.2, 0.3], 3)])
def test_the_best_held_out_weights_are_kept(scores, step, voc_tree, tmp_path, monkeypatch):
    calls = _scripted(monkeypatch, scores)
    main(_config(voc_tree), tmp_path / "run")
    assert calls == [2, 2, 2, 2]  # steps 0, 1, 2, 3 on the 2 held-out images
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["best"]["step"] == step  # ties keep the earlier step
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    best, last = ckpt["best"]["model"], ckpt["model"]
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    changed = any(not torch.equal(best[k], last[k]) for k in saved)
    assert changed == (step == 0)  # the training moved the weights away from step 0
    log = _log(tmp_path / "run")
    assert log[0]["event"] == "start" and len(log[0]["holdout"]) == 2
    assert next(e for e in log if e.get("event") == "selected")["step"] == step


def test_crf_is_chosen_on_the_held_out_images(voc_tree, tmp_path):
    main(_config(voc_tree, "train.select_every=0", "train.steps=1"), tmp_path / "run")
    report = json.loads((tmp_path / "run" / "crf_search.json").read_text())
    assert report["split"] == "train (held out: 2 images)"
    held = set(_log(tmp_path / "run")[0]["holdout"])
    assert set(report["images"]) == held


def test_resume_keeps_the_best_so_far(voc_tree, tmp_path):
    whole = main(_config(voc_tree), tmp_path / "whole")
    assert main(_config(voc_tree), tmp_path / "killed", stop_after=2)["stopped"]
    resumed = main(_config(voc_tree), tmp_path / "killed", resume=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert resumed["miou"] == pytest.approx(whole["miou"])
    best = [torch.load(p / "checkpoint.pt", weights_only=False)["best"]["step"]
            for p in (tmp_path / "whole", tmp_path / "killed")]  # fmt: skip
    assert best[0] == best[1]


def test_select_needs_a_holdout(voc_tree):
    with pytest.raises(ConfigError, match=r"train\.select_every.*data\.holdout"):
        _config(voc_tree, "data.holdout=0")
    with pytest.raises(ConfigError, match=r"data\.holdout"):
        _config(voc_tree, "data.holdout=2.5")


def test_too_few_training_images_after_the_holdout(voc_tree, tmp_path):
    config = _config(voc_tree, "train.batch_size=7")  # 8 training images, 2 held out
    with pytest.raises(ValueError, match=r"6 training images after data\.holdout kept 2 back"):
        main(config, tmp_path / "run")
