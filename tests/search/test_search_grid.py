"""Grid specs: validation (names, ranges, empty), expansion order, the fine grid, grid files."""

from __future__ import annotations

import json

import pytest

from deepcrf.params import CRFParams
from deepcrf.search.grid import (
    COARSE_GRID,
    DEEPLAB_BASE,
    expand_grid,
    fine_grid,
    load_grid,
    validate_grid,
)


def test_coarse_grid_is_deeplabs_protocol():
    grid = validate_grid(COARSE_GRID)
    assert grid["bilateral_compat"] == [3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
    assert grid["bilateral_sxy"] == [40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0]
    assert grid["bilateral_srgb"] == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    points = expand_grid(grid)
    assert len(points) == 6 * 9 * 8
    assert {p["gaussian_compat"] for p in points} == {3.0}
    assert {p["gaussian_sxy"] for p in points} == {3.0}
    assert {p["iterations"] for p in points} == {10}
    # canonical order: CRFParams' declaration order, the last name (w1) varies fastest
    assert [p["bilateral_compat"] for p in points[:6]] == grid["bilateral_compat"]
    assert {(p["bilateral_sxy"], p["bilateral_srgb"]) for p in points[:6]} == {(40.0, 3.0)}
    assert points[6]["bilateral_srgb"] == 4.0


def test_bad_grids_are_refused_with_reasons():
    with pytest.raises(ValueError, match="empty"):
        validate_grid({})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) w1.*valid: iterations"):
        validate_grid({"w1": [3, 4]})
    with pytest.raises(ValueError, match=r"bilateral_sxy.*> 0"):
        validate_grid({"bilateral_sxy": [40, 0]})
    with pytest.raises(ValueError, match=r"bilateral_srgb.*> 0"):
        validate_grid({"bilateral_srgb": [-3]})
    with pytest.raises(ValueError, match=r"iterations.*>= 0"):
        validate_grid({"iterations": [-1]})
    with pytest.raises(ValueError, match="bilateral_compat has an empty list"):
        validate_grid({"bilateral_compat": []})
    with pytest.raises(ValueError, match="twice"):
        validate_grid({"bilateral_compat": [3, 3.0]})


def test_fine_grid_takes_midpoints_around_the_best_and_looks_past_edges():
    coarse = validate_grid(COARSE_GRID)
    best = DEEPLAB_BASE.replace(bilateral_compat=8.0, bilateral_sxy=40.0, bilateral_srgb=5.0)
    fine = fine_grid(coarse, best.to_dict())
    assert fine["bilateral_compat"] == [7.0, 8.0, 9.0]
    assert fine["bilateral_srgb"] == [4.5, 5.0, 5.5]
    # σα = 40 is the lower edge: half a step and a step below it as well
    assert fine["bilateral_sxy"] == [30.0, 35.0, 40.0, 45.0]
    corner = DEEPLAB_BASE.replace(bilateral_compat=10.0, bilateral_sxy=120.0, bilateral_srgb=3.0)
    fine = fine_grid(coarse, corner.to_dict())
    assert fine["bilateral_compat"] == [9.0, 10.0, 11.0, 12.0]
    assert fine["bilateral_sxy"] == [115.0, 120.0, 125.0, 130.0]
    assert fine["bilateral_srgb"] == [2.0, 2.5, 3.0, 3.5]
    assert fine_grid({"iterations": [5, 10]}, {"iterations": 10})["iterations"] == [7, 10, 12, 15]
    assert fine_grid({"iterations": [0, 1]}, {"iterations": 0})["iterations"] == [0]
    assert fine_grid({"bilateral_srgb": [1, 3]}, {"bilateral_srgb": 1})["bilateral_srgb"] == [
        1.0,
        2.0,
    ]  # nothing at or below 0
    for params in expand_grid(fine_grid(coarse, corner.to_dict())):
        CRFParams.from_dict(params)


def test_grid_files_json_and_yaml(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"bilateral_compat": [3, 5], "iterations": 5}))
    grid = load_grid(path)
    assert grid == {"iterations": [5], "bilateral_compat": [3.0, 5.0]}
    assert len(expand_grid(grid, CRFParams())) == 2
    pytest.importorskip("yaml")
    ypath = tmp_path / "grid.yaml"
    ypath.write_text("bilateral_sxy: [50, 60]\nbilateral_srgb: [3]\n")
    assert load_grid(ypath) == {"bilateral_sxy": [50.0, 60.0], "bilateral_srgb": [3.0]}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_grid(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_grid(tmp_path / "missing.json")
