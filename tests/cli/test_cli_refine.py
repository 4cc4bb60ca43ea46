"""deepcrf refine: embedded demo, single image, folder mode with resume, label input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepcrf.cli import main
from deepcrf.data import SyntheticScenes, coarse_probabilities


def scene(index: int):
    image, label = SyntheticScenes(4, size=(48, 64), seed=3).generate(index)
    return image, label, coarse_probabilities(label, 7, stride=8, noise=1.0, seed=index)


def test_single_image_with_probabilities(tmp_path):
    image, label, probs = scene(0)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", probs)
    out = tmp_path / "refined.png"
    code = main(
        [
            "refine",
            str(tmp_path / "a.png"),
            "--probs",
            str(tmp_path / "a.npy"),
            "--out",
            str(out),
            "--save-probs",
            str(tmp_path / "marginals"),
            "--iterations",
            "5",
        ]
    )
    assert code == 0
    refined = np.array(Image.open(out))
    assert Image.open(out).mode == "P" and refined.shape == label.shape
    marginals = np.load(tmp_path / "marginals" / "refined.npy")
    assert marginals.shape == probs.shape
    np.testing.assert_array_equal(marginals.argmax(0), refined)
    assert (refined == label).mean() >= (probs.argmax(0) == label).mean()


def test_folder_mode_resumes(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(3):
        image, _, probs = scene(i)
        Image.fromarray(image).save(tmp_path / "img" / f"s{i}.png")
        Image.fromarray(probs.argmax(0).astype(np.uint8)).save(tmp_path / "lab" / f"s{i}.png")
    args = [
        "refine",
        str(tmp_path / "img"),
        "--labels",
        str(tmp_path / "lab"),
        "--num-labels",
        "7",
        "--gt-prob",
        "0.6",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s0.png", "s1.png", "s2.png"]
    (tmp_path / "out" / "s1.png").unlink()  # as if the first run was killed there
    capsys.readouterr()
    assert main(args) == 0
    assert "refined 1 images" in capsys.readouterr().out
    assert (tmp_path / "out" / "s1.png").exists()


def test_errors_name_the_problem(tmp_path, capsys):
    image, _, probs = scene(0)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.save(tmp_path / "bad.npy", probs[:, :10])
    assert main(["refine", str(tmp_path / "a.png"), "--probs", str(tmp_path / "bad.npy")]) == 1
    assert "probs" in capsys.readouterr().err
    assert main(["refine", str(tmp_path / "a.png")]) == 1
    assert "--probs or --labels" in capsys.readouterr().err
    (tmp_path / "imgs").mkdir()
    Image.fromarray(image).save(tmp_path / "imgs" / "x.png")
    (tmp_path / "probs").mkdir()
    code = main(
        [
            "refine",
            str(tmp_path / "imgs"),
            "--probs",
            str(tmp_path / "probs"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "x.png" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["image", "probs"])
def test_missing_files(tmp_path, capsys, missing):
    image, _, probs = scene(0)
    if missing != "image":
        Image.fromarray(image).save(tmp_path / "a.png")
    if missing != "probs":
        np.save(tmp_path / "a.npy", probs)
    assert main(["refine", str(tmp_path / "a.png"), "--probs", str(tmp_path / "a.npy")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a_crf.png").exists()
