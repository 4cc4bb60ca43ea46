"""load_model keeps recorded usage keys (the input convention) out of the constructor."""

from __future__ import annotations

import json

import pytest
import safetensors.torch

from deepcrf.models import build, load_model, save_safetensors


def test_recorded_input_convention_survives_load(tmp_path):
    model = build("fcn8s", 3, width=1 / 32)
    model.config["normalize"] = "caffe"
    loaded = load_model(save_safetensors(model, tmp_path / "m.safetensors"))
    assert loaded.config["normalize"] == "caffe"
    assert loaded.config == model.config


def test_config_without_name_is_an_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    model = build("fcn8s", 3, width=1 / 32)
    safetensors.torch.save_file(
        dict(model.state_dict()), str(path), metadata={"deepcrf.config": json.dumps({"a": 1})}
    )
    with pytest.raises(ValueError, match="name and num_classes"):
        load_model(path)
