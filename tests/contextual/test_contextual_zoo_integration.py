"""deepcrf.models.build_contextual_crf: the zoo's FeatMap-Net, Unary-Net, Pairwise-Net."""

from __future__ import annotations

import torch

from deepcrf import refine
from deepcrf.contextual import asynchronous_step
from deepcrf.models import build_contextual_crf


def test_build_from_the_zoo_trains_and_predicts():
    torch.manual_seed(0)
    model = build_contextual_crf(4, width=1 / 16)
    assert len(model.featmaps) == 3 and model.relations == ("surrounding", "above_below")
    x = torch.randn(1, 3, 48, 40)
    h, w = model.featmaps[0](x).shape[-2:]
    labels = torch.randint(0, 4, (1, 48, 40))
    loss = model(x, labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert all(p.grad.abs().sum() > 0 for p in model.pairwise_parameters())
    q = model.marginals(x)
    assert q.shape == (1, 4, h, w)
    torch.testing.assert_close(q.sum(1), torch.ones(1, h, w))
    assert model.predict(x).shape == (1, 4, 48, 40)


def test_shared_featmap_build_runs_an_asynchronous_step():
    torch.manual_seed(0)
    model = build_contextual_crf(3, width=1 / 16, relations=("above_below",), shared_featmap=True)
    assert len(model.featmaps) == 1
    main = torch.optim.SGD(model.featmap_parameters() + model.unary_parameters(), lr=0.01)
    pair = torch.optim.SGD(model.pairwise_parameters(), lr=0.01)
    x, labels = torch.randn(1, 3, 40, 40), torch.randint(0, 3, (1, 40, 40))
    before = [p.detach().clone() for p in model.featmap_parameters()]
    result = asynchronous_step(model, x, labels, main, pair, edges_per_update=100)
    assert result.pairwise_updates["above_below"] >= 1
    assert any(
        not torch.equal(a, p) for a, p in zip(before, model.featmap_parameters(), strict=True)
    )


def test_prediction_pipeline_refines_with_the_dense_crf():
    torch.manual_seed(0)
    model = build_contextual_crf(4, width=1 / 16).eval()
    x = torch.randn(1, 3, 48, 40)
    rgb = torch.randint(0, 256, (1, 3, 48, 40), dtype=torch.uint8)
    with torch.no_grad():
        coarse = model.predict(x, rgb)
        refined = model.predict(x, rgb, refine=True, iterations=5)
    assert refined.shape == (1, 4, 48, 40)
    torch.testing.assert_close(refined, refine(coarse, rgb, iterations=5))
    assert not torch.allclose(refined, coarse)
