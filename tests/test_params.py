"""CRFParams: validation, names, JSON round trip, CLI flags."""

import argparse
import json

import pytest

from deepcrf.params import DEEPLAB_NAMES, PRESETS, CRFParams


def test_defaults_are_deeplab_largefov():
    p = CRFParams()
    assert p.deeplab() == {"w1": 4.0, "σα": 121.0, "σβ": 5.0, "w2": 3.0, "σγ": 3.0}
    assert p.iterations == 10
    assert set(DEEPLAB_NAMES) <= set(CRFParams.names())


def test_json_round_trip(tmp_path):
    p = CRFParams(iterations=5, bilateral_sxy=(50, 60), bilateral_srgb=7)
    path = p.save(tmp_path / "p.json")
    assert json.loads(path.read_text())["bilateral_sxy"] == [50.0, 60.0]
    assert CRFParams.load(path) == p


def test_search_output_best_is_read(tmp_path):
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"best": {"bilateral_compat": 6}, "results": []}))
    assert CRFParams.load(path).bilateral_compat == 6.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"sxy": 3}, "unknown parameter"),
        ({"iterations": 2.5}, "iterations"),
        ({"iterations": -1}, "iterations"),
        ({"bilateral_sxy": 0}, "bilateral_sxy"),
        ({"gaussian_sxy": float("nan")}, "gaussian_sxy"),
        ({"bilateral_compat": float("inf")}, "bilateral_compat"),
        ({"bilateral_srgb": []}, "bilateral_srgb"),
        ({"gaussian_compat": "3"}, "gaussian_compat"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ValueError, match=message):
        CRFParams.from_dict(values)


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json"):
        CRFParams.load(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        CRFParams.load(tmp_path / "missing.json")


def test_cli_flags_override_file(tmp_path):
    parser = argparse.ArgumentParser()
    CRFParams.add_arguments(parser)
    path = PRESETS["deeplab"].save(tmp_path / "p.json")
    args = parser.parse_args(["--crf-params", str(path), "--iterations", "3"])
    p = CRFParams.from_args(args)
    assert p == PRESETS["deeplab"].replace(iterations=3)
    assert CRFParams.from_args(parser.parse_args([])) == CRFParams()
    with pytest.raises(ValueError, match="--bilateral-sxy"):
        CRFParams.from_args(parser.parse_args(["--bilateral-sxy", "-1"]))
