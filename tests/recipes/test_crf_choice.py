"""A run chooses its post-processing CRF on its own training images; a second stage (CRF-as-RNN,
joint) starts its CRF from what the run it starts from carries."""

from __future__ import annotations

import json

import pytest
import yaml
from recipe_settings import FAST

from deepcrf.models import load_model
from deepcrf.recipes import evaluate_model, load_run, main, resolve_config
from deepcrf.recipes.config import ConfigError
from deepcrf.recipes.data import build_dataset

GRID = [
    "crf_search.images=3",
    "crf_search.iterations=5",
    "crf_search.grid={bilateral_compat: [0.5, 4.0], bilateral_sxy: [5.0, 40.0], "
    "bilateral_srgb: [6.0]}",
]


@pytest.fixture(scope="module")
def searched_run(voc_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "deeplab"
    # without held-out images (data.holdout=0) the search scores the first training images
    config = resolve_config("deeplab", "tiny", [*FAST, "train.steps=3", "data.holdout=0", *GRID],
                            data_root=str(voc_tree))  # fmt: skip
    main(config, out)
    return out


def test_the_run_carries_the_best_point_of_its_search(searched_run, voc_tree):
    report = json.loads((searched_run / "crf_search.json").read_text())
    points = report["results"]
    assert len(points) == 4 and report["num_images"] == 3 and report["split"] == "train"
    best = report["best"]
    assert best["iterations"] == 5
    assert (best["bilateral_compat"], best["bilateral_sxy"]) in {
        (w, s) for w in (0.5, 4.0) for s in (5.0, 40.0)
    }
    assert report["best_miou"] == max(p["miou"] for p in points)
    run = load_run(searched_run)
    assert run.crf.to_dict() == best  # what eval --crf / predict --crf apply
    saved = yaml.safe_load((searched_run / "config.yaml").read_text())
    assert saved["crf"] == best

    # independent path: refine() + eval's confusion matrix on the same training images
    mode = run.model.config.get("normalize", "imagenet")
    config = resolve_config("deeplab", "tiny", data_root=str(voc_tree))
    train = build_dataset(config.data, "train", run.num_classes, False, mode)
    scored = evaluate_model(run, train, crf=run.crf, progress=False, limit=3)
    assert scored["miou"] == pytest.approx(report["best_miou"], abs=1e-6)
    no_crf = evaluate_model(run, train, crf=None, progress=False, limit=3)
    assert no_crf["miou"] == pytest.approx(report["baseline"]["no_crf"], abs=1e-6)


@pytest.mark.parametrize("from_init", [True, False])
def test_a_second_stage_starts_from_the_carried_crf(searched_run, voc_tree, tmp_path, from_init):
    out = tmp_path / "joint"
    sets = [f"init={searched_run}", f"crf_from_init={from_init}", "optim.lr=1e-9"]
    config = resolve_config("joint", "tiny", [*FAST, "train.steps=1", *sets],
                            data_root=str(voc_tree))  # fmt: skip
    own = config.crf_params()
    main(config, out)
    carried = load_run(searched_run).crf
    expected = carried if from_init else own
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["crf"] == expected.to_dict()
    model = load_model(out / "model.safetensors")
    assert model.crf.eval_iterations == expected.iterations
    bandwidths = model.crf.bilateral_log_bandwidths.exp().tolist()
    assert bandwidths[:2] == pytest.approx([expected.bilateral_sxy] * 2, rel=1e-4)
    assert bandwidths[2:] == pytest.approx([expected.bilateral_srgb] * 3, rel=1e-4)


def test_search_settings_are_checked():
    with pytest.raises(ConfigError, match=r"crf_search\.images"):
        resolve_config("deeplab", "tiny", ["crf_search.images=-1"])
    with pytest.raises(ConfigError, match="crf_search"):
        resolve_config("deeplab", "tiny", ["crf_search.grid_size=3"])
