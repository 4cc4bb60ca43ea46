"""deepcrf crf-search (folder form): output JSON, table, heatmap, resume, --method fit,
--crf-params round trip into deepcrf refine, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepcrf.cli import main
from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.dense import refine
from deepcrf.params import CRFParams
from deepcrf.viz import save_label_png

GRID = {"bilateral_compat": [3, 6], "bilateral_sxy": [30, 60], "bilateral_srgb": [5, 10]}


@pytest.fixture
def folders(tmp_path):
    scenes = SyntheticScenes(5, size=(32, 40), seed=2, num_classes=5, normalize=None)
    for sub in ("img", "probs", "gt"):
        (tmp_path / sub).mkdir()
    for i in range(5):
        image, label = scenes.generate(i)
        Image.fromarray(image).save(tmp_path / "img" / f"n{i}.png")
        np.save(tmp_path / "probs" / f"n{i}.npy", coarse_probabilities(label, 5, seed=i))
        save_label_png(tmp_path / "gt" / f"n{i}.png", label.astype(np.uint8))
    (tmp_path / "grid.json").write_text(json.dumps(GRID))
    return tmp_path


def _args(root, *extra):
    return [
        "crf-search",
        "--images",
        str(root / "img"),
        "--probs",
        str(root / "probs"),
        "--labels",
        str(root / "gt"),
        "--quiet",
        "--jobs",
        "1",
        *extra,
    ]


def test_grid_search_output_table_plot_and_round_trip(folders, capsys):
    out = folders / "search.json"
    argv = _args(
        folders,
        "--grid",
        str(folders / "grid.json"),
        "--num-images",
        "4",
        "--out",
        str(out),
        "--plot",
        str(folders / "search.png"),
    )
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best mIoU" in printed and "<- best" in printed and "no CRF" in printed
    result = json.loads(out.read_text())
    assert result["num_images"] == 4 and result["images"] == ["n0", "n1", "n2", "n3"]
    assert len(result["results"]) == 8
    assert all(0 <= r["miou"] <= 1 and 0 <= r["pixel_acc"] <= 1 for r in result["results"])
    assert set(result["baseline"]) == {"no_crf", "default"}
    assert result["best_miou"] == max(r["miou"] for r in result["results"])
    best = CRFParams.load(out).to_dict()
    assert best == result["best"]
    assert Image.open(folders / "search.png").format == "PNG"
    assert (folders / "search.results.jsonl").exists()

    # the same command again resumes: nothing is recomputed, the output is the same
    assert main(argv) == 0
    assert json.loads(out.read_text()) == result

    # round trip: deepcrf refine --crf-params search.json uses exactly the best parameters
    refined = folders / "refined.png"
    assert (
        main(
            [
                "refine",
                str(folders / "img" / "n4.png"),
                "--probs",
                str(folders / "probs" / "n4.npy"),
                "--crf-params",
                str(out),
                "--out",
                str(refined),
                "--save-probs",
                str(refined.parent / "marginals"),
            ]
        )
        == 0
    )
    image = np.asarray(Image.open(folders / "img" / "n4.png").convert("RGB"))
    expected = refine(np.load(folders / "probs" / "n4.npy"), image, **result["best"])
    marginals = np.load(refined.parent / "marginals" / (refined.stem + ".npy"))
    np.testing.assert_allclose(marginals, expected, atol=1e-6)


def test_fit_method(folders):
    out = folders / "fit.json"
    assert main(_args(folders, "--method", "fit", "--fit-steps", "4", "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "fit" and result["start"]["preset"]
    CRFParams.from_dict(result["best"])
    assert result["best_miou"] >= max(r["miou"] for r in result["results"]) - 1e-3
    start = next(r for r in result["results"] if r["stage"] == "step 0")
    assert result["best_miou"] >= start["miou"]  # never below the preset it starts from
    assert (folders / "fit.results.jsonl").exists()
    # the same command again reads every state and score back: the same output
    assert main(_args(folders, "--method", "fit", "--fit-steps", "4", "--out", str(out))) == 0
    assert json.loads(out.read_text()) == result


def test_fewer_images_than_asked_warns(folders):
    out = folders / "s.json"
    with pytest.warns(UserWarning, match="only 5 images"):
        assert main(_args(folders, "--grid", str(folders / "grid.json"), "--out", str(out))) == 0
    assert json.loads(out.read_text())["num_images"] == 5


def test_bad_inputs_name_the_problem(folders, capsys):
    out = str(folders / "s.json")
    np.save(folders / "probs" / "n2.npy", np.full((5, 30, 40), 0.2, np.float32))
    assert main(_args(folders, "--grid", str(folders / "grid.json"), "--out", out)) == 1
    assert "n2.npy" in capsys.readouterr().err
    (folders / "probs" / "n2.npy").unlink()
    assert main(_args(folders, "--out", out)) == 1
    assert "n2" in capsys.readouterr().err
    assert main(["crf-search", "--images", str(folders / "img"), "--out", out]) == 1
    assert "--labels" in capsys.readouterr().err
    (folders / "bad.json").write_text('{"w1": [3]}')
    assert main(_args(folders, "--grid", str(folders / "bad.json"), "--out", out)) == 1
    assert "valid: iterations" in capsys.readouterr().err
    # --out naming the --grid file (here through a link) is refused, the input untouched
    (folders / "grid-link.json").symlink_to(folders / "bad.json")
    out_link = str(folders / "grid-link.json")
    assert main(_args(folders, "--grid", str(folders / "bad.json"), "--out", out_link)) == 1
    assert "--grid input" in capsys.readouterr().err
    assert (folders / "bad.json").read_text() == '{"w1": [3]}'


def test_model_form_computes_probabilities_once(tmp_path):
    pytest.importorskip("deepcrf.recipes.predict")
    pytest.importorskip("safetensors")
    from deepcrf.models import build, save_safetensors

    run = tmp_path / "run"
    run.mkdir()
    torch_model = build("deeplab_largefov", 7, width=0.0625)
    save_safetensors(torch_model, run / "model.safetensors")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"bilateral_compat": [3, 5]}))
    out = tmp_path / "search.json"
    argv = [
        "crf-search",
        "--model",
        str(run),
        "--dataset",
        "synthetic",
        "--split",
        "val",
        "--num-images",
        "2",
        "--grid",
        str(grid),
        "--jobs",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and len(result["results"]) == 2
    cache = tmp_path / "search.probs"
    probs = sorted((cache / "probs").glob("*.npy"))
    assert len(probs) == 2 and np.load(probs[0]).shape[0] == 7
    stamps = [p.stat().st_mtime_ns for p in probs]
    assert main(argv) == 0  # resumed: the probabilities are not recomputed
    assert [p.stat().st_mtime_ns for p in probs] == stamps
    assert json.loads(out.read_text()) == result


@pytest.mark.slow
def test_search_json_drives_predict_and_eval(tmp_path):
    pytest.importorskip("deepcrf.recipes.predict")
    pytest.importorskip("safetensors")
    from deepcrf.models import build, save_safetensors
    from deepcrf.recipes.predict import load_run, model_probabilities

    run = tmp_path / "run"
    run.mkdir()
    save_safetensors(build("deeplab_largefov", 7, width=0.0625), run / "model.safetensors")
    best = CRFParams(bilateral_compat=6.0, bilateral_sxy=50.0, bilateral_srgb=7.0).to_dict()
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"best": best, "baseline": {}, "results": []}))
    image, _ = SyntheticScenes(1, size=(40, 48), seed=0, normalize=None).generate(0)
    Image.fromarray(image).save(tmp_path / "photo.png")

    argv = ["predict", "--model", str(run), str(tmp_path / "photo.png"), "--out"]
    assert main([*argv, str(tmp_path / "p"), "--crf-params", str(search)]) == 0
    probs = model_probabilities(load_run(run).model, image)
    expected = refine(probs, image, **best).argmax(0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "p" / "photo.png")), expected)

    plain = tmp_path / "plain.json"
    CRFParams.from_dict(best).save(plain)
    scores = []
    for name, params in (("a", search), ("b", plain)):
        out = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(run),
                    "--dataset",
                    "synthetic",
                    "--split",
                    "val",
                    "--crf-params",
                    str(params),
                    "--json",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
        scores.append(json.loads(out.read_text())["miou"])
    assert scores[0] == scores[1]
