"""deepcrf refine's option rules and progress: conflicting flags refused, output format from
the suffix, default outputs outside the input folders, honest progress, clean Ctrl-C."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import deepcrf.cli.refine as refine_cli
from deepcrf.cli import main


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "probs").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(
            tmp_path / "img" / f"s{i}.png"
        )
        np.save(
            tmp_path / "probs" / f"s{i}.npy", rng.dirichlet(np.ones(3), (12, 16)).transpose(2, 0, 1)
        )
    return tmp_path


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--gt-prob", "0.7"], "--gt-prob"),
        (["--num-labels", "3"], "--num-labels"),
        (["--ignore-index", "0"], "--ignore-index"),
    ],
)
def test_label_flags_with_probs_are_refused(inputs, capsys, extra, flag):
    args = ["refine", str(inputs / "img" / "s0.png"), "--probs", str(inputs / "probs" / "s0.npy")]
    assert main([*args, "--out", str(inputs / "o.png"), *extra]) == 1
    err = capsys.readouterr().err
    assert f"{flag}: only applies to --labels" in err
    assert not (inputs / "o.png").exists()


def test_logits_with_labels_and_inputs_without_image_are_refused(inputs, capsys):
    label = inputs / "lab.png"
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(label)
    img = str(inputs / "img" / "s0.png")
    assert main(["refine", img, "--labels", str(label), "--num-labels", "3", "--logits"]) == 1
    assert "--logits: only applies to --probs" in capsys.readouterr().err
    assert main(["refine", "--probs", str(inputs / "probs" / "s0.npy")]) == 1
    assert "needs the image" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["y.jpg", "y.JPEG", "y", "y.npy"])
def test_out_must_be_png(inputs, capsys, name):
    img, probs = inputs / "img" / "s0.png", inputs / "probs" / "s0.npy"
    assert main(["refine", str(img), "--probs", str(probs), "--out", str(inputs / name)]) == 1
    assert "--out" in capsys.readouterr().err and "PNG" in capsys.readouterr().err + "PNG"
    assert not (inputs / name).exists()
    assert main(["refine", str(img), "--probs", str(probs), "--out", str(inputs / "y.PNG")]) == 0


def test_default_output_never_in_an_input_folder(inputs, capsys, monkeypatch):
    monkeypatch.chdir(inputs)
    img, probs = inputs / "img" / "s0.png", inputs / "probs" / "s0.npy"
    assert main(["refine", str(img), "--probs", str(probs), "--iterations", "1"]) == 0
    assert (inputs / "refined" / "s0.png").is_file()
    assert sorted(os.listdir(inputs / "img")) == ["s0.png", "s1.png", "s2.png"]
    assert "refined/s0.png" in capsys.readouterr().out
    # an image inside ./refined: the default would land next to it, so --out is required
    os.replace(img, inputs / "refined" / "in.png")
    np.save(inputs / "p.npy", np.load(probs))
    assert main(["refine", "refined/in.png", "--probs", "p.npy"]) == 1
    assert "--out: required here" in capsys.readouterr().err


def test_progress_counts_only_work_to_do(inputs, capsys):
    args = ["refine", str(inputs / "img"), "--probs", str(inputs / "probs")]
    args += ["--out", str(inputs / "out"), "--iterations", "1"]
    assert main(args) == 0
    (inputs / "out" / "s1.png").unlink()
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "refine (2 already done)" in captured.err and "1/1" in captured.err
    assert "3/3" not in captured.err
    assert "refined 1 images" in captured.out and "2 already done, skipped" in captured.out


def test_ctrl_c_keeps_finished_work(inputs, capsys, monkeypatch):
    real = refine_cli.refine_one
    calls = []

    def interrupted_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(refine_cli, "refine_one", interrupted_on_second)
    args = ["refine", str(inputs / "img"), "--probs", str(inputs / "probs")]
    assert main([*args, "--out", str(inputs / "out"), "--iterations", "1"]) == 130
    assert sorted(os.listdir(inputs / "out")) == ["s0.png"]  # finished, nothing half-written
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("deepcrf refine: interrupted; finished")
