"""Model files: metadata validated and the model's size checked before anything is
allocated; corrupt files and odd suffixes give errors naming the path (issue 14, item 4)."""

from __future__ import annotations

import json
import resource
import struct

import pytest

from deepcrf.models import build, load_model, load_safetensors, save_safetensors
from deepcrf.models.io import load_imagenet_vgg16


def _header_only(path, config) -> None:
    meta = {"__metadata__": {"deepcrf.config": json.dumps(config)}}
    blob = json.dumps(meta).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "ok.safetensors"
    save_safetensors(build("deeplab_largefov", 3, width=1 / 16), path)
    return path


def test_tiny_file_claiming_a_huge_model_is_refused_before_allocating(tmp_path):
    path = tmp_path / "evil.safetensors"
    _header_only(path, {"name": "deeplab_largefov", "num_classes": 21, "width": 3})
    assert path.stat().st_size < 200
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"evil\.safetensors.*does not match its config"):
        load_model(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # the real model would take ~700 MB


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "nope", "num_classes": 3}, "unknown model name"),
        ({"name": "deeplab_largefov", "num_classes": "3"}, "num_classes"),
        ({"name": "deeplab_largefov", "num_classes": 0}, "num_classes"),
        ({"name": "deeplab_largefov", "num_classes": True}, "num_classes"),
        ({"name": "deeplab_largefov", "num_classes": 3, "width": -1}, "width"),
        ({"name": "deeplab_largefov", "num_classes": 3, "width": "wide"}, "width"),
        ({"name": "deeplab_largefov", "num_classes": 3, "width": 1e9}, "width"),
        (
            {"name": "deeplab_largefov", "num_classes": 3, "colour": {"a": [float("inf")]}},
            "colour.a",
        ),
        ({"name": "deeplab_largefov", "num_classes": 3, "crf": {"w": float("nan")}}, "crf.w"),
        ({"name": "deeplab_largefov", "num_classes": 3, "unknown_option": 1}, "unknown_option"),
        (["not", "a", "dict"], "name and num_classes"),
    ],
)
def test_bad_metadata_names_the_file(tmp_path, config, message):
    path = tmp_path / "bad.safetensors"
    _header_only(path, config)
    with pytest.raises(ValueError, match=message) as info:
        load_model(path)
    assert "bad.safetensors" in str(info.value)


def test_corrupt_and_truncated_files_name_the_path(tmp_path, saved):
    data = saved.read_bytes()
    cases = {
        "trunc.safetensors": data[: len(data) // 2],
        "garbage.safetensors": b"\x00" * 64,
        "empty.safetensors": b"",
        "bighead.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
        "badjson.safetensors": struct.pack("<Q", 5) + b"{nope",
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        for loader in (load_model, lambda p: load_safetensors(build("fcn8s", 3, width=1 / 16), p)):
            with pytest.raises(ValueError, match=name.replace(".", r"\.")):
                loader(path)


def test_suffixes(tmp_path, saved):
    upper = tmp_path / "MODEL.SAFETENSORS"
    upper.write_bytes(saved.read_bytes())
    assert type(load_model(upper)).__name__ == "DeepLab"
    other = tmp_path / "model.weights"
    other.write_bytes(saved.read_bytes())  # sniffed by content
    assert type(load_model(other)).__name__ == "DeepLab"
    text = tmp_path / "model.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"model\.txt"):
        load_model(text)
    with pytest.raises(ValueError, match=r"model\.txt"):
        load_imagenet_vgg16(build("deeplab_largefov", 3, width=1 / 16), text)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_model(tmp_path / "missing.safetensors")


def test_round_trip_still_works(saved):
    model = load_model(saved)
    assert model.config["name"] == "deeplab_largefov" and model.config["num_classes"] == 3
