"""grid_search: planted optimum, jobs independence, resume, refusing another search's file,
bad inputs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from progress_interrupt import Interrupt, StopAfter

from deepcrf.dense import refine
from deepcrf.search import Sample, grid_search, select_best
from deepcrf.search.grid import validate_grid

GRID = {"bilateral_compat": [1.0, 5.0, 20.0], "bilateral_srgb": [3.0, 13.0, 60.0]}
PLANTED = {"bilateral_compat": 5.0, "bilateral_srgb": 13.0}


def _planted_samples(make_samples):
    """Ground truth = the refined prediction of a known parameter point: that point scores
    mIoU 1 and every other point less."""
    samples = make_samples(4, size=(28, 36), seed=5)
    params = dict(
        iterations=10, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=40.0, **PLANTED
    )
    return [
        replace(s, label=refine(s.probs, s.image, **params).argmax(0).astype(np.int64))
        for s in samples
    ], params


def test_finds_a_planted_optimum(make_samples):
    samples, planted = _planted_samples(make_samples)
    base_grid = {**GRID, "bilateral_sxy": [40.0]}
    result = grid_search(samples, base_grid)
    assert result.best == planted
    assert result.extra["best_miou"] == 1.0
    others = [r["miou"] for r in result.results if r["params"] != planted]
    assert len(others) == 8 and max(others) < 1.0
    assert set(result.baseline) == {"no_crf", "default"}
    assert result.baseline["no_crf"] < 1.0
    assert json.loads(json.dumps(result.to_json()))["best"] == planted


@pytest.mark.slow
def test_same_results_with_one_and_two_jobs(make_samples, tmp_path):
    samples = make_samples(4, size=(24, 32), seed=7)
    grid = {**GRID, "bilateral_sxy": [20.0, 50.0]}
    one = grid_search(samples, grid, jobs=1)
    two = grid_search(samples, grid, jobs=2, results_file=tmp_path / "r.jsonl")
    assert one.to_json() == two.to_json()


def test_resume_after_interruption_gives_the_same_table(make_samples, tmp_path):
    samples = make_samples(3, size=(24, 32), seed=9)
    grid = {**GRID, "bilateral_sxy": [20.0, 50.0]}
    path = tmp_path / "search.results.jsonl"
    with pytest.raises(Interrupt):
        grid_search(samples, grid, results_file=path, progress=StopAfter(8))
    done = path.read_text().splitlines()
    assert 1 + 2 < len(done) < 1 + 2 + 18  # header, baselines, part of the grid
    path.write_text(path.read_text() + done[-1][:40])  # a line cut short by a kill
    counted = []

    class Count:
        def __call__(self, stage, total):
            counted.append(total)
            return self

        def update(self, n):
            pass

        def close(self):
            pass

    resumed = grid_search(samples, grid, results_file=path, progress=Count())
    assert sum(counted) == 2 + 18 - (len(done) - 1)  # only the missing points were run
    fresh = grid_search(samples, grid)
    assert resumed.to_json() == fresh.to_json()


def test_a_results_file_from_another_search_is_refused(make_samples, tmp_path):
    samples = make_samples(2, size=(16, 20), seed=1)
    path = tmp_path / "r.jsonl"
    grid_search(samples, {"bilateral_compat": [3.0]}, results_file=path)
    with pytest.raises(ValueError, match=r"different search.*grid"):
        grid_search(samples, {"bilateral_compat": [4.0]}, results_file=path)
    other = make_samples(2, size=(16, 20), seed=2)
    with pytest.raises(ValueError, match=r"different search.*data"):
        grid_search(other, {"bilateral_compat": [3.0]}, results_file=path)
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="not a deepcrf crf-search results file"):
        grid_search(samples, {"bilateral_compat": [3.0]}, results_file=foreign)
    assert foreign.read_text() == '{"hello": 1}\n'  # never overwritten


def test_bad_inputs(make_samples):
    [s] = make_samples(1, size=(16, 20))
    with pytest.raises(ValueError, match="empty"):
        grid_search([s], {})
    with pytest.raises(ValueError, match=r"unknown parameter.*valid"):
        grid_search([s], {"sigma": [1]})
    wrong = Sample("cat", s.image, s.probs[:, :15], s.label)
    with pytest.raises(ValueError, match=r"cat.*sizes must match"):
        grid_search([wrong], {"bilateral_compat": [3.0]})
    with pytest.raises(ValueError, match="no images"):
        grid_search([], {"bilateral_compat": [3.0]})


def test_selection_prefers_robust_points_within_tolerance():
    axes = validate_grid({"bilateral_compat": [1.0, 2.0, 3.0, 4.0, 5.0]})
    mious = [0.50, 0.7005, 0.60, 0.700, 0.699]  # a spike at 2, a plateau at 4..5
    rows = [
        {"params": {"bilateral_compat": w}, "miou": m}
        for w, m in zip(axes["bilateral_compat"], mious)
    ]
    assert select_best(rows, axes, tolerance=1e-3)["params"]["bilateral_compat"] == 4.0
    assert select_best(rows, axes, tolerance=0.0)["params"]["bilateral_compat"] == 2.0


def test_logits_instead_of_probabilities_are_refused(make_samples):
    [s] = make_samples(1, size=(16, 20))
    logits = Sample("logits", s.image, np.log(s.probs) + 3.0, s.label)
    with pytest.raises(ValueError, match="not hold probabilities"):
        grid_search([logits], {"bilateral_compat": [3.0]})


def test_coarse_to_fine_searches_around_the_coarse_choice(make_samples, monkeypatch):
    import deepcrf.search.runner as module

    small = {"bilateral_compat": [3.0, 6.0], "bilateral_sxy": [30.0, 60.0], "bilateral_srgb": [5.0]}
    monkeypatch.setattr(module, "COARSE_GRID", small)
    samples = make_samples(2, size=(20, 24), seed=4)
    result = grid_search(samples)
    coarse = [r for r in result.results if r["stage"] == "coarse"]
    fine = [r for r in result.results if r["stage"] == "fine"]
    assert len(coarse) == 4 and fine
    center = select_best(coarse, validate_grid(small))["params"]
    for r in fine:  # within one coarse step of the coarse choice
        assert abs(r["params"]["bilateral_compat"] - center["bilateral_compat"]) <= 3.0
        assert abs(r["params"]["bilateral_sxy"] - center["bilateral_sxy"]) <= 30.0
    assert result.best in [r["params"] for r in fine] + [center]
    assert result.to_json()["best_miou"] >= max(r["miou"] for r in fine) - 1e-3
