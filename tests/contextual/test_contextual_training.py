"""The asynchronous update of §8.2: update counts, which nets move when, gradient equivalence."""

from __future__ import annotations

import math

import pytest
import torch
from contextual_nets import tiny_model

from deepcrf.contextual import asynchronous_step


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 16, 16, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    labels[1, :3] = 255
    return x, labels


def valid_edge_count(model, labels, relation_index):
    y = labels.reshape(-1)
    e = model.graph(8, 8, 2, torch.device("cpu"))[relation_index]
    return int(((y[e[:, 0]] != 255) & (y[e[:, 1]] != 255)).sum())


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params):
    return any(not torch.equal(a, p) for a, p in zip(before, params, strict=True))


def test_featmap_moves_once_per_step_pairwise_once_per_subiteration():
    model = tiny_model()
    x, labels = batch()
    main = torch.optim.SGD(model.featmap_parameters() + model.unary_parameters(), lr=0.1)
    pair = torch.optim.SGD(model.pairwise_parameters(), lr=0.1)
    featmap_params = model.featmap_parameters()
    events = []
    state = {"featmap": snapshot(featmap_params), "pairwise": snapshot(model.pairwise_parameters())}

    def after_pairwise(*_):
        events.append(("pairwise", changed(state["pairwise"], model.pairwise_parameters())))
        events[-1] += (changed(state["featmap"], featmap_params),)
        state["pairwise"] = snapshot(model.pairwise_parameters())

    def after_main(*_):
        events.append(("featmap", changed(state["featmap"], featmap_params)))
        state["featmap"] = snapshot(featmap_params)

    pair.register_step_post_hook(after_pairwise)
    main.register_step_post_hook(after_main)
    result = asynchronous_step(model, x, labels, main, pair, edges_per_update=200)

    # ceil(graph edges / 200) sub-iterations (equal on every process), each with at most 200
    # of the valid edges
    graph = model.graph(8, 8, 2, torch.device("cpu"))
    expected = [math.ceil(e.shape[0] / 200) for e in graph]
    assert [result.pairwise_updates[r] for r in model.relations] == expected
    assert all(valid_edge_count(model, labels, i) <= 200 * expected[i] for i in range(2))
    assert expected[0] > 1 and expected[1] > 1
    sub = [ev for ev in events if ev[0] == "pairwise"]
    assert len(sub) == sum(expected)
    assert all(moved and not featmap_moved for _, moved, featmap_moved in sub)
    assert events[-1] == ("featmap", True) and sum(ev[0] == "featmap" for ev in events) == 1
    assert result.loss > 0


def test_frozen_pairwise_net_gives_the_gradient_of_the_mean_loss():
    x, labels = batch(1)
    model = tiny_model(seed=3)
    main = torch.optim.SGD(model.featmap_parameters() + model.unary_parameters(), lr=0.0)
    pair = torch.optim.SGD(model.pairwise_parameters(), lr=0.0)
    result = asynchronous_step(model, x, labels, main, pair, edges_per_update=150)
    async_grads = [p.grad.clone() for p in model.featmap_parameters() + model.unary_parameters()]

    reference = tiny_model(seed=3)
    loss = reference.loss(x, labels, reduction="mean")
    loss.backward()
    ref_grads = [p.grad for p in reference.featmap_parameters() + reference.unary_parameters()]
    for a, b in zip(async_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert result.loss == pytest.approx(loss.item(), rel=1e-5)


def test_repeated_steps_lower_the_loss():
    x, labels = batch(2)
    model = tiny_model(seed=4)
    main = torch.optim.Adam(model.featmap_parameters() + model.unary_parameters(), lr=0.02)
    pair = torch.optim.Adam(model.pairwise_parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    losses = [asynchronous_step(model, x, labels, main, pair, 300, g).loss for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0]


def test_optimizers_must_split_the_parameters():
    model = tiny_model()
    x, labels = batch()
    everything = torch.optim.SGD(model.parameters(), lr=0.1)
    pair = torch.optim.SGD(model.pairwise_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        asynchronous_step(model, x, labels, everything, pair)
    main = torch.optim.SGD(model.featmap_parameters(), lr=0.1)
    with pytest.raises(ValueError, match="pairwise_optimizer"):
        asynchronous_step(model, x, labels, main, torch.optim.SGD(model.unary_parameters()))
    with pytest.raises(ValueError, match="pairwise_optimizer"):
        greedy = torch.optim.SGD(model.pairwise_parameters() + model.unary_parameters())
        asynchronous_step(model, x, labels, main, greedy)
    with pytest.raises(ValueError, match="edges_per_update"):
        asynchronous_step(model, x, labels, main, pair, edges_per_update=0)
