"""CRF-as-RNN starts exactly where "FCN-8s + separate CRF" is: a crfasrnn model built from an
FCN-8s run (``init=``, ``crf_from_init``), before any training, labels the images as
``deepcrf eval --model FCN_RUN --crf`` does (the run's FCN-8s, then refine() with the CRF the
run carries)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepcrf.params import CRFParams
from deepcrf.recipes import resolve_config
from deepcrf.recipes.checkpoint import save_model
from deepcrf.recipes.data import build_dataset
from deepcrf.recipes.engine import build_run_model, carried_crf
from deepcrf.recipes.predict import crf_refine, iterate_dataset, model_logits, model_probabilities

#: a CRF a tiny run may choose (crf_choice's grid) and one with DeepLab's smoothness kernel
CARRIED = [
    CRFParams(
        iterations=10,
        gaussian_sxy=3.0,
        gaussian_compat=1.0,
        bilateral_sxy=10.0,
        bilateral_srgb=4.0,
        bilateral_compat=6.0,
    ),
    CRFParams(
        iterations=7,
        gaussian_sxy=3.0,
        gaussian_compat=3.0,
        bilateral_sxy=40.0,
        bilateral_srgb=12.0,
        bilateral_compat=2.0,
    ),
]


def _fcn_run(voc_tree, folder, crf: CRFParams):
    """An FCN-8s "run" of the tiny preset (random body, confident random score layers)."""
    config = resolve_config("fcn8s", "tiny", data_root=str(voc_tree))
    config.model.num_classes = 7
    torch.manual_seed(0)
    model = build_run_model(config, 7).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.startswith("score_"):
                nn.init.normal_(module.weight, std=3.0)
    folder.mkdir()
    save_model(model, folder / "model.safetensors", crf)
    return config, model


@pytest.mark.parametrize("carried", CARRIED)
def test_crfasrnn_at_step_0_labels_like_fcn8s_plus_its_crf(carried, voc_tree, tmp_path):
    fcn_config, fcn = _fcn_run(voc_tree, tmp_path / "fcn8s", carried)
    config = resolve_config("crfasrnn", "tiny", [f"init={tmp_path / 'fcn8s'}"], str(voc_tree))
    config.model.num_classes = 7
    carried_crf(config)
    assert config.crf_params() == carried
    model = build_run_model(config, 7).eval()
    assert model.crf.eval_iterations == carried.iterations
    dataset = build_dataset(fcn_config.data, "val", 7, False, "imagenet", 0)
    changed = 0
    for _, raw, _ in iterate_dataset(dataset):
        probs = model_probabilities(fcn, raw)
        separate = crf_refine(probs, raw, carried).argmax(0)
        with torch.no_grad():
            end_to_end = model_logits(model, [raw])[0].argmax(0).numpy()
        np.testing.assert_array_equal(end_to_end, separate)
        changed += int((separate != probs.argmax(0)).sum())
    assert changed > 0  # the CRF does change labels: the comparison is not vacuous
