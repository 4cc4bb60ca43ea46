"""fit: fitted parameters as refine() kwargs compute what the layer computes; fitting lowers
the held-out cross-entropy of the CRF's marginals on generated scenes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepcrf.dense import refine, unary_from_probs
from deepcrf.nn import DenseCRF
from deepcrf.params import CRFParams
from deepcrf.search.fit import crf_params, fit


def _perturbed(k: int, per_class: bool, compat: bool) -> DenseCRF:
    crf = DenseCRF(
        k,
        iterations=4,
        eval_iterations=4,
        bilateral_sxy=(20.0, 30.0),
        bilateral_srgb=(10.0, 12.0, 14.0),
        per_class_weights=per_class,
        learn_compat=compat,
        learn_bandwidths=True,
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in crf.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return crf.eval()


def test_fitted_parameters_are_refine_kwargs_of_the_layer(make_samples):
    [s] = make_samples(1, size=(20, 26), seed=4)
    unary = unary_from_probs(torch.from_numpy(s.probs))
    image = torch.from_numpy(s.image).permute(2, 0, 1).float()
    for per_class, compat in ((False, False), (True, False), (True, True), (False, True)):
        crf = _perturbed(5, per_class, compat)
        with torch.no_grad():
            expected = torch.softmax(crf(unary[None], image[None])[0], 0).numpy()
        params = crf_params(crf)
        assert CRFParams.from_dict(params).to_dict() == params  # valid --crf-params
        got = refine(s.probs, s.image, **params)
        np.testing.assert_allclose(got, expected, atol=2e-4)


def _cross_entropy(params: dict, samples) -> float:
    total = 0.0
    for s in samples:
        q = torch.from_numpy(refine(s.probs, s.image, **params))
        total += float(F.nll_loss(q.clamp_min(1e-8).log()[None], torch.from_numpy(s.label)[None]))
    return total / len(samples)


def test_fit_improves_held_out_cross_entropy(make_samples):
    train = make_samples(4, size=(32, 40), seed=11)
    held_out = make_samples(4, size=(32, 40), seed=12)
    start = CRFParams(iterations=5, bilateral_compat=10.0, bilateral_sxy=80.0, bilateral_srgb=13.0)
    result = fit(train, init=start, steps=16, lr=0.1, eval_every=8)
    assert result.start == start.to_dict()
    assert len(result.losses) == 16 and len(result.checkpoints) == 3 + 4
    assert result.miou == max(c["miou"] for c in result.checkpoints)
    # the gradient descent itself: its last iterate lowers the held-out cross-entropy
    [last] = [c for c in result.checkpoints if c["step"] == 16]
    assert last["params"] != start.to_dict()
    before = _cross_entropy(start.to_dict(), held_out)
    assert _cross_entropy(last["params"], held_out) < before
