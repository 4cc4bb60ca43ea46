"""ContextualCRF with tiny networks: shapes, batching, loss, gradients, prediction."""

from __future__ import annotations

import pytest
import torch
from contextual_nets import TinyFeatMap, pairwise_mlp, tiny_model
from torch import nn

from deepcrf.contextual import ContextualCRF, mean_field, piecewise_nll, range_box_edges


def images(b=2, h=12, w=14, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def manual_potentials(model, image):
    """Potentials of one image straight from the nets, no chunking, no batching."""
    feats = [model.featmaps[i](image) for i in model.featmap_index]
    _, c, h, w = feats[0].shape
    unary = model.unary_net(feats[0])[0].permute(1, 2, 0).reshape(h * w, -1)
    edges, tables = [], []
    for f, rel, net in zip(feats[1:], model.relations, model.pairwise_nets, strict=True):
        nodes = f[0].permute(1, 2, 0).reshape(h * w, c)
        e = range_box_edges(h, w, rel, box=0.5)
        tables.append(net(torch.cat([nodes[e[:, 0]], nodes[e[:, 1]]], 1)).view(-1, 3, 3))
        edges.append(e)
    return unary, edges, tables, (h, w)


def test_marginals_match_per_image_mean_field():
    model = tiny_model(chunk_size=50)
    x = images()
    q = model.marginals(x)
    assert q.shape == (2, 3, 6, 7)
    torch.testing.assert_close(q.sum(1), torch.ones(2, 6, 7))
    for b in range(2):
        unary, edges, tables, (h, w) = manual_potentials(model, x[b : b + 1])
        ref = mean_field(unary, edges, tables, iterations=3).view(h, w, 3).permute(2, 0, 1)
        torch.testing.assert_close(q[b], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x), q)


def test_loss_matches_per_image_piecewise_nll_and_downsamples_labels():
    model = tiny_model()
    x = images()
    labels = torch.randint(0, 3, (2, 6, 7))
    labels[0, :2] = 255
    total = model.loss(x, labels, reduction="sum")
    ref = 0.0
    for b in range(2):
        unary, edges, tables, _ = manual_potentials(model, x[b : b + 1])
        ref = ref + piecewise_nll(unary, edges, tables, labels[b].reshape(-1))
    torch.testing.assert_close(total, ref)
    # full-resolution labels (each node a 2 x 2 block) give the same loss
    full = labels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(model(x, full), model.loss(x, labels))


def test_gradients_reach_every_network():
    model = tiny_model()
    model.loss(images(), torch.randint(0, 3, (2, 6, 7))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_chunked_pairwise_net_gives_the_same_loss_and_gradients():
    x, labels = images(), torch.randint(0, 3, (2, 6, 7))
    grads = []
    for chunk in (7, 100_000):
        model = tiny_model(chunk_size=chunk)
        loss = model.loss(x, labels)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_unary_only_model_and_shared_featmap():
    model = tiny_model(relations=())
    x = images()
    unary = model.unary_net(model.featmaps[0](x))
    torch.testing.assert_close(model.marginals(x), unary.softmax(1))
    shared = ContextualCRF(
        TinyFeatMap(), nn.Conv2d(6, 3, 1), [pairwise_mlp(6, 3)], 3, ["surrounding"]
    )
    assert len(shared.featmaps) == 1 and shared.featmap_index == [0, 0]
    shared.loss(x, torch.randint(0, 3, (2, 6, 7))).backward()
    assert shared.featmaps[0].conv.weight.grad is not None


def test_predict_upsamples_probabilities_and_requires_rgb_to_refine():
    model = tiny_model()
    x = images()
    probs = model.predict(x)
    assert probs.shape == (2, 3, 12, 14)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 12, 14))
    rgb = torch.randint(0, 256, (2, 3, 24, 28), dtype=torch.uint8)
    assert model.predict(x, rgb=rgb).shape == (2, 3, 24, 28)
    with pytest.raises(ValueError, match="rgb"):
        model.predict(x, refine=True)


def test_constructor_rejects_mismatched_networks():
    with pytest.raises(ValueError, match="pairwise_nets"):
        ContextualCRF(TinyFeatMap(), nn.Conv2d(6, 3, 1), [], 3)
    with pytest.raises(ValueError, match="featmap"):
        ContextualCRF([TinyFeatMap()] * 2, nn.Conv2d(6, 3, 1), [pairwise_mlp(6, 3)] * 2, 3)
    with pytest.raises(ValueError, match="relations"):
        ContextualCRF(TinyFeatMap(), nn.Conv2d(6, 3, 1), [pairwise_mlp(6, 3)], 3, ["left"])
    model = tiny_model()
    with pytest.raises(ValueError, match="labels"):
        model.loss(images(), torch.zeros(3, 6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        model.loss(images(), [[0]])
    bad_pairwise = ContextualCRF(
        TinyFeatMap(), nn.Conv2d(6, 3, 1), [nn.Linear(12, 4)], 3, ["surrounding"]
    )
    with pytest.raises(ValueError, match="pairwise_net"):
        bad_pairwise.marginals(images())


def test_pairwise_scores_same_with_and_without_autograd():
    from deepcrf.contextual import edge_features, pairwise_scores

    torch.manual_seed(0)
    nodes = torch.randn(20, 6, requires_grad=True)
    edges = range_box_edges(4, 5, "above_below", box=0.5)
    net = pairwise_mlp(6, 3)
    direct = net(edge_features(nodes, edges)).view(-1, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(pairwise_scores(nodes, edges, net, 3, chunk_size=7), direct)
    chunked = pairwise_scores(nodes, edges, net, 3, chunk_size=7)
    torch.testing.assert_close(chunked, direct)
    (g,) = torch.autograd.grad(chunked.square().sum(), nodes)
    (ref,) = torch.autograd.grad(direct.square().sum(), nodes)
    torch.testing.assert_close(g, ref)


def test_pairwise_weight_scales_the_tables_in_mean_field():
    from contextual_nets import tiny_model as _tiny

    from deepcrf.contextual import mean_field as _mf

    x = torch.randn(1, 3, 12, 12)
    zero = _tiny(pairwise_weight=0.0)
    with torch.no_grad():
        pot = zero.potentials(zero.feature_maps(x))
        assert torch.allclose(
            zero.marginals(x).permute(0, 2, 3, 1).reshape(-1, 3), pot.unary.softmax(1), atol=1e-6
        )
        half = _tiny(pairwise_weight=0.5)
        expected = _mf(pot.unary, pot.edges, [t * 0.5 for t in pot.pairwise], 3)
        got = half.marginals(x).permute(0, 2, 3, 1).reshape(-1, 3)
        assert torch.allclose(got, expected, atol=1e-6)
