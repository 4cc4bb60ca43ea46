"""The tiny FCN-8s / CRF-as-RNN presets: the CRF-as-RNN's FCN-8s is built like the FCN-8s run
it starts from (GroupNorm trunk), and CNN and CRF train end to end from the CRF it carries."""

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


def test_tiny_crfasrnn_trains_the_cnn_and_the_crf_end_to_end():
    config = resolve_config("crfasrnn", "tiny")
    model = build_run_model(config, 5)
    optimizer = build_optimizer(model, config.optim)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert "fcn.upscore8.weight" not in {n for n, p in named.items() if id(p) in rate}
    assert rate[id(named["fcn.features.0.weight"])] == config.optim.lr
    # the CRF (kernel weights, compatibility) learns at its own, larger rate
    crf = [n for n in named if n.startswith("crf.")]
    assert crf and all(rate[id(named[n])] > config.optim.lr for n in crf)
    # training and test run the same number of mean-field iterations
    assert model.crf.iterations == model.crf.eval_iterations == config.crf_params().iterations
    assert isinstance(model.crf.kernel_weights, torch.nn.Parameter)
