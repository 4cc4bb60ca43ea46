"""deepcrf eval --ignore-pred-void: pseudo-label pixels marked 255 are left out and counted."""

from __future__ import annotations

import json

import numpy as np

from deepcrf.cli import main
from deepcrf.viz import save_label_png


def test_void_predictions_are_left_out_and_reported(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (2, 10, 12)).astype(np.uint8)
    gt[0, 0, :4] = 255  # void in the ground truth too
    pred = gt.copy()
    pred[0, 5:, :] = 255  # uncertain pseudo-labels
    pred[1, :2, :] = (gt[1, :2, :] + 1) % 3  # wrong where certain
    for i in range(2):
        save_label_png(tmp_path / "gt" / f"a{i}.png", gt[i])
        save_label_png(tmp_path / "pred" / f"a{i}.png", pred[i])
    common = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    common += ["--num-classes", "3", "--quiet"]
    assert main([*common, "--ignore-pred-void", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    labelled = (gt != 255).sum()
    left_out = ((pred == 255) & (gt != 255)).sum()
    kept = (pred != 255) & (gt != 255)
    assert result["pred_void_pixels"] == left_out
    assert result["pred_void_fraction"] == left_out / labelled
    assert result["num_pixels"] == kept.sum()
    assert result["pixel_acc"] == (pred[kept] == gt[kept]).mean()
    assert "left out" in capsys.readouterr().out
    # without the flag a 255 prediction at a labelled pixel is an error, as before
    assert main(common) == 1
