"""The main job (``deepcrf refine`` with no input): consistent pixel accounting, the CRF
helping with the default (DeepLab-LargeFOV) parameters, the figure and where it is."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from deepcrf.cli import main
from deepcrf.cli.demo import SCENE_SIZE, pixel_changes, run_demo
from deepcrf.cli.demo_figure import comparison_figure, zoom_window
from deepcrf.params import PRESETS, CRFParams


def test_pixel_changes_add_up_brute_force():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (20, 30))
    gt[0, :5] = 255
    before, after = rng.integers(0, 4, (2, 20, 30))
    c = pixel_changes(before, after, gt)
    kinds = {"corrected": 0, "broken": 0, "wrong_to_wrong": 0}
    for b, a, g in zip(before.ravel(), after.ravel(), gt.ravel()):
        if g == 255 or a == b:
            continue
        kinds["corrected" if a == g else "broken" if b == g else "wrong_to_wrong"] += 1
    assert (c.corrected, c.broken, c.wrong_to_wrong) == tuple(kinds.values())
    assert c.corrected + c.broken + c.wrong_to_wrong == c.changed and c.total == 600 - 5


def test_zoom_window_finds_the_densest_window():
    mask = np.zeros((40, 50), bool)
    mask[25:31, 33:40] = True
    mask[2, 2] = True
    y, x = zoom_window(mask, (10, 12))
    assert mask[y : y + 10, x : x + 12].sum() == 42


def test_main_job_explains_itself(tmp_path, capsys):
    """With CRFParams' defaults (DeepLab-LargeFOV's), which ``deepcrf refine`` uses."""
    run_demo(CRFParams(), tmp_path / "demo")
    out = capsys.readouterr().out
    acc = re.search(r"pixel accuracy\s+([\d.]+)%\s+([\d.]+)%", out)
    miou = re.search(r"mean IoU\s+([\d.]+)%\s+([\d.]+)%", out)
    assert float(acc[2]) > float(acc[1]) + 1 and float(miou[2]) > float(miou[1]) + 2
    counts = re.search(
        r"pixels changed: (\d+) of (\d+) = (\d+) corrected \+ (\d+) broken \+ (\d+) from", out
    )
    changed, total, corrected, broken, other = map(int, counts.groups())
    assert corrected + broken + other == changed and total == SCENE_SIZE[0] * SCENE_SIZE[1]
    assert corrected > 10 * broken
    text = " ".join(out.split())
    assert "DeepLab-LargeFOV" in text and "never saw" in text and "poles" in text
    figure = tmp_path / "demo" / "comparison.png"
    assert f"Picture: {figure}" in out
    picture = Image.open(figure)
    assert picture.mode == "RGB" and picture.width > 5 * SCENE_SIZE[1]
    assert picture.height > 2 * SCENE_SIZE[0]


def test_refine_without_input_runs_the_demo(tmp_path, capsys):
    assert main(["refine", "--out", str(tmp_path), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert f"Picture: {tmp_path / 'comparison.png'}" in out
    text = " ".join(out.split())
    assert "DeepLab-LargeFOV's parameters" in text and "2 mean-field iterations" in text
    assert (tmp_path / "comparison.png").is_file()


def test_demo_reports_the_parameters_used(tmp_path, capsys):
    result = run_demo(PRESETS["pydensecrf"], tmp_path)
    out = capsys.readouterr().out
    assert "pydensecrf's example parameters (w1=10, σα=80, σβ=13, w2=3, σγ=3)" in out
    assert (result.after == result.label).mean() > (result.before == result.label).mean()
    run_demo(CRFParams(iterations=1, bilateral_compat=7.0), tmp_path)
    assert "your parameters (w1=7" in capsys.readouterr().out


def test_figure_shows_the_panels():
    gt = np.zeros((24, 32), np.int64)
    gt[:, 16:] = 1
    image = np.zeros((24, 32, 3), np.uint8)
    before, after = np.zeros_like(gt), gt.copy()
    scores = ({"pixel_acc": 0.5, "miou": 0.25}, {"pixel_acc": 1.0, "miou": 1.0})
    fig = np.asarray(comparison_figure(image, gt, before, after, ("a", "b"), scores, ["note"]))
    from deepcrf.cli.demo_figure import CHANGE_COLOURS, CLASS_COLOURS

    def count(colour) -> int:
        return int((fig == np.asarray(colour, np.uint8)).all(-1).sum())

    swatch = count(CHANGE_COLOURS["broken"])  # nothing broken: the legend's swatch only
    assert swatch > 0 and count(CHANGE_COLOURS["wrong to another wrong"]) == swatch
    assert count(CHANGE_COLOURS["corrected"]) >= swatch + 24 * 16  # + the change panel
    assert count(CLASS_COLOURS[1]) >= 2 * 24 * 16  # ground truth and after panels
