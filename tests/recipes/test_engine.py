"""The training loop: one step of every recipe, resume equivalence, bad inputs, NaN stop."""

from __future__ import annotations

import json

import pytest
import torch
from recipe_settings import FAST
from safetensors.torch import load_file

from deepcrf.models import load_model
from deepcrf.recipes import RECIPES, TrainingError, main, resolve_config
from deepcrf.recipes import engine as engine_module


def _config(recipe: str, root, *extra: str):
    return resolve_config(recipe, "tiny", [*FAST, *extra], data_root=str(root))


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_one_tiny_step_of_every_recipe(recipe, voc_tree, tmp_path):
    out = tmp_path / recipe
    steps = ["train.steps=1", *(f"stage1.{s}" for s in FAST), "stage1.train.steps=1"]
    result = main(_config(recipe, voc_tree, *steps), out)
    assert result["step"] == 1 and 0 <= result["miou"] <= 1
    for name in ("config.yaml", "checkpoint.pt", "model.safetensors", "log.jsonl",
                 "metrics.json"):  # fmt: skip
        assert (out / name).is_file(), name
    model = load_model(out / "model.safetensors")
    assert model.config["num_classes"] == 7  # from the tree's classes.txt
    first = RECIPES[recipe].first_stage
    if first is not None:  # trained its first stage into RUN/<recipe> and started from it
        assert (out / first / "model.safetensors").is_file()
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert log[0]["event"] == "start"


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_resume_after_a_kill_gives_the_same_weights(voc_tree, tmp_path):
    # dropout on, scale and flip augmentation, 2 epochs: every source of randomness matters
    extra = ["train.steps=5", "train.save_every=2", "data.scale_min=0.7", "data.scale_max=1.3",
             "model.options.dropout=0.5"]  # fmt: skip
    whole = main(_config("deeplab", voc_tree, *extra), tmp_path / "whole")
    stopped = main(_config("deeplab", voc_tree, *extra), tmp_path / "killed", stop_after=3)
    assert stopped == {"step": 3, "stopped": True}
    ckpt = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["epoch"] == 0
    # a kill after the step-4 save would resume from there; here from step 3
    resumed = main(_config("deeplab", voc_tree, *extra), tmp_path / "killed", resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert resumed["miou"] == pytest.approx(whole["miou"])


def test_run_folder_errors(voc_tree, tmp_path):
    config = _config("deeplab", voc_tree)
    with pytest.raises(FileNotFoundError, match=r"--resume: .* has no checkpoint.pt"):
        main(config, tmp_path / "new", resume=True)
    main(config, tmp_path / "done")
    before = (tmp_path / "done" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        main(_config("deeplab", voc_tree), tmp_path / "done")
    assert (tmp_path / "done" / "checkpoint.pt").read_bytes() == before
    with pytest.raises(FileNotFoundError, match=r"data.root: no such folder"):
        main(_config("deeplab", tmp_path / "nowhere"), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="split: 'nosplit'"):
        main(_config("deeplab", voc_tree, "data.train_split=nosplit"), tmp_path / "y")
    with pytest.raises(FileNotFoundError, match="backbone_weights: no such file"):
        main(_config("deeplab", voc_tree, "backbone_weights=/no/vgg16.pth"), tmp_path / "z")


def test_init_must_fit(voc_tree, tmp_path):
    main(_config("fcn8s", voc_tree), tmp_path / "fcn")
    config = _config("crfasrnn", voc_tree, f"init={tmp_path / 'fcn'}")
    main(config, tmp_path / "crf")  # an FCN-8s run loads into CRF-as-RNN's .fcn
    fcn = load_model(tmp_path / "fcn" / "model.safetensors")
    crf = load_model(tmp_path / "crf" / "model.safetensors")
    assert crf.fcn.features[0].weight.shape == fcn.features[0].weight.shape
    wider = _config("crfasrnn", voc_tree, f"init={tmp_path / 'fcn'}", "model.options.width=0.125")
    with pytest.raises(ValueError, match=r"init: shapes .* fcn\.features\.0\.weight"):
        main(wider, tmp_path / "wide")
    with pytest.raises(ValueError, match=r"init: .* no counterpart"):
        main(_config("deeplab", voc_tree, f"init={tmp_path / 'fcn'}"), tmp_path / "dl")
    with pytest.raises(FileNotFoundError, match="init: "):
        main(_config("deeplab", voc_tree, f"init={tmp_path / 'none'}"), tmp_path / "dl2")


def test_labels_beyond_the_classes_are_an_error(voc_tree, tmp_path):
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        main(_config("deeplab", voc_tree, "model.num_classes=3"), tmp_path / "k3")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(voc_tree, tmp_path, monkeypatch):
    config = _config("deeplab", voc_tree, "train.steps=4", "train.save_every=2")
    real = engine_module.segmentation_loss
    calls = {"n": 0}

    def loss_then_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(engine_module, "segmentation_loss", loss_then_nan)
    with pytest.raises(TrainingError, match=r"NaN or infinite at step 3.*checkpoint .* is kept"):
        main(config, tmp_path / "nan")
    ckpt = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2
    assert not (tmp_path / "nan" / "model.safetensors").exists()


def test_gradient_accumulation_equals_the_large_batch(voc_tree, tmp_path):
    base = ["train.steps=1", "model.options.dropout=0.0", "optim.name=sgd", "optim.momentum=0.0"]
    main(_config("deeplab", voc_tree, *base, "train.batch_size=4"), tmp_path / "big")
    main(_config("deeplab", voc_tree, *base, "train.batch_size=2", "optim.accumulate=2"),
         tmp_path / "acc")  # fmt: skip
    a, b = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda_keeps_the_crf_in_float32(voc_tree, tmp_path, amp):
    from deepcrf.models import CRFasRNN

    seen = []
    original = CRFasRNN.forward

    def forward(self, x, image=None):
        out = original(self, x, image)
        seen.append(out.dtype)
        return out

    CRFasRNN.forward = forward
    try:
        config = _config("crfasrnn", voc_tree, "train.device=cuda", f"train.amp={amp}",
                         *(f"stage1.{s}" for s in FAST), "stage1.train.device=cuda")  # fmt: skip
        result = main(config, tmp_path / amp)
    finally:
        CRFasRNN.forward = original
    assert result["step"] == 2 and seen and all(d == torch.float32 for d in seen)
