"""The tiny FCN-8s / CRF-as-RNN presets: the CRF-as-RNN's FCN-8s is built like the FCN-8s run
it starts from (GroupNorm trunk), and its CNN is trained through the CRF it starts from."""

from __future__ import annotations

import torch

from deepcrf.recipes import resolve_config
from deepcrf.recipes.engine import build_run_model
from deepcrf.recipes.optim import build_optimizer


def test_tiny_crfasrnn_builds_its_fcn8s_like_the_tiny_fcn8s():
    fcn = resolve_config("fcn8s", "tiny").model.options
    rnn = {k: v for k, v in resolve_config("crfasrnn", "tiny").model.options.items() if k != "crf"}
    assert rnn == fcn and fcn["norm"] == "group"
    a = build_run_model(resolve_config("fcn8s", "tiny"), 5)
    b = build_run_model(resolve_config("crfasrnn", "tiny"), 5)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k.removeprefix("fcn."): v.shape for k, v in b.state_dict().items() if k.startswith("fcn.")
    }


def test_tiny_crfasrnn_trains_the_cnn_through_the_crf_it_starts_from():
    config = resolve_config("crfasrnn", "tiny")
    model = build_run_model(config, 5)
    optimizer = build_optimizer(model, config.optim)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in trained}
    assert not any(n.startswith("crf.") for n in names)  # the chosen CRF stays as it is
    assert "fcn.score_fr.weight" in names and "fcn.features.0.weight" in names
    # training and test run the same number of mean-field iterations
    assert model.crf.iterations == model.crf.eval_iterations == config.crf_params().iterations
    assert isinstance(model.crf.kernel_weights, torch.nn.Parameter)
