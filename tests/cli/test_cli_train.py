"""``deepcrf train`` on the command line: --list, errors with exit status 1, a tiny run."""

from __future__ import annotations

import json

from deepcrf.cli import main as cli
from deepcrf.data import SyntheticScenes, write_voc_tree


def test_list_prints_every_recipe_and_preset(capsys):
    assert cli(["train", "--list"]) == 0
    out = capsys.readouterr().out
    from deepcrf.recipes import RECIPES

    names = ("deeplab", "fcn8s", "crfasrnn", "joint", "contextual")
    assert set(names) <= set(RECIPES)
    for name in names:
        assert f"\n{name} " in f"\n{out}"
    count = len(RECIPES)
    assert out.count("--preset tiny") == count and out.count("--preset paper") == count


def test_bad_recipe_preset_and_key_exit_with_a_message(tmp_path, capsys):
    assert cli(["train", "nosuch", "--out", str(tmp_path / "r")]) == 1
    assert "unknown recipe 'nosuch'; choose one of deeplab" in capsys.readouterr().err
    assert cli(["train", "deeplab", "--preset", "big", "--out", str(tmp_path / "r")]) == 1
    assert "choose one of paper, tiny" in capsys.readouterr().err
    assert cli(["train", "deeplab", "--set", "optim.lr=x", "--out", str(tmp_path / "r")]) == 1
    assert "optim.lr: expected float" in capsys.readouterr().err
    assert cli(["train", "deeplab", "--preset", "tiny", "--out", str(tmp_path / "r"),
                "--resume", "--data-root", str(tmp_path)]) == 1  # fmt: skip
    assert "has no checkpoint.pt" in capsys.readouterr().err


def test_train_command_writes_a_run(tmp_path, capsys):
    write_voc_tree(SyntheticScenes(6, size=(40, 40), seed=1), tmp_path / "data", 0.34)
    args = ["train", "deeplab", "--preset", "tiny", "--data-root", str(tmp_path / "data"),
            "--out", str(tmp_path / "run"), "--quiet", "--set", "train.steps=1",
            "--set", "train.batch_size=2", "--set", "data.crop_size=32"]  # fmt: skip
    assert cli(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 1 and "miou" in result
    assert (tmp_path / "run" / "model.safetensors").is_file()
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "recipe: deeplab" in text and "crop_size: 32" in text


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from deepcrf.recipes import main, resolve_config

    write_voc_tree(SyntheticScenes(8, size=(40, 40), seed=2), tmp_path / "data", 0.25)
    sets = ["train.steps=8", "train.batch_size=2", "data.crop_size=32", "train.save_every=2",
            "train.progress=false"]  # fmt: skip
    args = ["train", "deeplab", "--preset", "tiny", "--data-root", str(tmp_path / "data"),
            "--out", str(tmp_path / "killed"), "--quiet"]  # fmt: skip
    args += [x for s in sets for x in ("--set", s)]
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepcrf", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=False)["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    assert cli([*args, "--resume"]) == 0
    config = resolve_config("deeplab", "tiny", sets, data_root=str(tmp_path / "data"))
    main(config, tmp_path / "whole")
    a = load_file(str(tmp_path / "killed" / "model.safetensors"))
    b = load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
