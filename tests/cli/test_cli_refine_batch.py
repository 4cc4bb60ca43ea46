"""deepcrf refine folder mode with --jobs and --shard (the shared batch loop)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from deepcrf.cli import main
from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.data.io import read_label


def _folder(tmp_path, n=5):
    (tmp_path / "img").mkdir()
    (tmp_path / "probs").mkdir()
    scenes = SyntheticScenes(n, size=(32, 40), seed=5)
    for i in range(n):
        image, label = scenes.generate(i)
        Image.fromarray(image).save(tmp_path / "img" / f"im{i}.png")
        probs = coarse_probabilities(label, scenes.num_classes, stride=8, noise=1.0, seed=i)
        np.save(tmp_path / "probs" / f"im{i}.npy", probs)
    return tmp_path / "img", tmp_path / "probs"


def _refine(img, probs, out, *extra):
    args = ["refine", str(img), "--probs", str(probs), "--out", str(out), "--iterations", "3"]
    return main(args + list(extra))


def test_jobs_and_shards_give_the_same_outputs(tmp_path, capsys):
    img, probs = _folder(tmp_path)
    assert _refine(img, probs, tmp_path / "one") == 0
    assert _refine(img, probs, tmp_path / "two", "--jobs", "2") == 0
    assert "refined 5 images" in capsys.readouterr().out
    assert _refine(img, probs, tmp_path / "sh", "--shard", "0/2") == 0
    first = {p.name for p in (tmp_path / "sh").glob("*.png")}
    assert _refine(img, probs, tmp_path / "sh", "--shard", "1/2") == 0
    out = capsys.readouterr().out
    assert "shard 1/2" in out
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 5 and 0 < len(first) < 5
    assert sorted(p.name for p in (tmp_path / "sh").glob("*.png")) == names
    for name in names:
        ref = read_label(tmp_path / "one" / name)
        np.testing.assert_array_equal(read_label(tmp_path / "two" / name), ref)
        np.testing.assert_array_equal(read_label(tmp_path / "sh" / name), ref)


def test_bad_shard_spec(tmp_path, capsys):
    img, probs = _folder(tmp_path, 1)
    assert _refine(img, probs, tmp_path / "o", "--shard", "3/2") == 1
    assert "--shard" in capsys.readouterr().err
