"""``deepcrf convert``: prints the mapping, writes a loadable model, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caffemodel_writer import write_caffemodel
from deepcrf.cli import main
from deepcrf.models import load_model
from released_layers import c, deeplab_largefov, fcn8s


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_convert_prints_mapping_and_writes_a_loadable_model(tmp_path, rng, capsys):
    layers = deeplab_largefov(rng, classes=21)
    layers.append(("fc8_extra_unused", [np.zeros((2, 2), np.float32)]))
    src = write_caffemodel(tmp_path / "train_iter_8000.caffemodel", layers, v1=True)
    out = tmp_path / "largefov.safetensors"
    assert main(["convert", str(src), "--arch", "deeplab_largefov", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "conv1_1: (4, 3, 3, 3) -> features.0.weight" in printed
    assert "fc8_voc12" in printed and "-> fc8.weight" in printed
    assert "left out  fc8_extra_unused: (1, 1, 2, 2)" in printed
    assert "normalize=caffe" in printed and f"wrote {out}" in printed
    model = load_model(out)
    assert model.config["normalize"] == "caffe"
    torch.testing.assert_close(model.fc7.bias, torch.from_numpy(dict(layers)["fc7"][1]))


def test_convert_errors_exit_1_and_write_nothing(tmp_path, rng, capsys):
    src = write_caffemodel(tmp_path / "fcn.caffemodel", fcn8s(rng), v1=True)
    out = tmp_path / "m.safetensors"
    assert main(["convert", str(src), "--arch", "fcn8s", "--num-classes", "5",
                 "--out", str(out)]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert f"(21, {c(4096)}, 1, 1)" in err and f"(5, {c(4096)}, 1, 1)" in err
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(bytes(range(256)) * 8)
    assert main(["convert", str(garbage), "--arch", "fcn8s", "--out", str(out)]) == 1
    assert "garbage.caffemodel is not a readable caffemodel" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn.caffemodel", "garbage.caffemodel"]


def test_arch_names():
    from deepcrf.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["convert", "x", "--arch", "crfasrnn_pytorch", "--out", "y"])
    assert args.arch == "crfasrnn_pytorch" and args.num_classes == 21
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "x", "--arch", "resnet", "--out", "y"])
