"""Piecewise objective (eq. 11-14) against a direct computation; label downsampling rule."""

from __future__ import annotations

import math

import pytest
import torch

from deepcrf.contextual import downsample_labels, piecewise_nll, range_box_edges


def direct_nll(unaries, types, labels, ignore=255):
    """Eq. 13 term by term with explicit normalisers, pure Python."""
    total = 0.0
    for u in unaries:
        for p, y in enumerate(labels):
            if y != ignore:
                total -= u[p][y] - math.log(sum(math.exp(s) for s in u[p]))
    for edges, table in types:
        for e, (p, q) in enumerate(edges):
            if labels[p] == ignore or labels[q] == ignore:
                continue
            flat = [s for row in table[e] for s in row]
            total -= table[e][labels[p]][labels[q]] - math.log(sum(math.exp(s) for s in flat))
    return total


def problem(seed=0, k=4, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    unary = torch.randn(h * w, k, generator=g, dtype=torch.float64)
    edges = [range_box_edges(h, w, r, box=0.5) for r in ("surrounding", "above_below")]
    tables = [3 * torch.randn(e.shape[0], k, k, generator=g, dtype=torch.float64) for e in edges]
    labels = torch.randint(0, k, (h * w,), generator=g)
    labels[torch.randperm(h * w, generator=g)[:7]] = 255
    return unary, edges, tables, labels


def test_sum_matches_direct_computation_with_ignored_nodes():
    unary, edges, tables, labels = problem()
    got = piecewise_nll(unary, edges, tables, labels, reduction="sum")
    ref = direct_nll(
        [unary.tolist()],
        [(e.tolist(), t.tolist()) for e, t in zip(edges, tables, strict=True)],
        labels.tolist(),
    )
    assert got.dtype == torch.float64
    assert abs(got.item() - ref) < 1e-9


def test_several_unary_types_are_separate_likelihoods():
    unary, edges, tables, labels = problem(seed=1)
    second = torch.randn_like(unary)
    got = piecewise_nll([unary, second], edges[1], tables[1], labels)
    ref = direct_nll(
        [unary.tolist(), second.tolist()],
        [(edges[1].tolist(), tables[1].tolist())],
        labels.tolist(),
    )
    assert abs(got.item() - ref) < 1e-9


def test_mean_averages_each_potential_type_over_its_own_terms():
    unary, edges, tables, labels = problem(seed=2)
    valid = labels != 255
    expected = piecewise_nll(unary, edges[:0], tables[:0], labels) / valid.sum()
    for e, t in zip(edges, tables, strict=True):
        keep = valid[e[:, 0]] & valid[e[:, 1]]
        zero_unary = torch.zeros_like(unary)  # contributes log K per valid node
        edge_sum = piecewise_nll(zero_unary, e, t, labels) - valid.sum() * math.log(unary.shape[1])
        expected = expected + edge_sum / keep.sum()
    got = piecewise_nll(unary, edges, tables, labels, reduction="mean")
    torch.testing.assert_close(got, expected)


def test_all_ignored_gives_zero_with_gradient():
    unary, edges, tables, labels = problem()
    unary.requires_grad_(True)
    loss = piecewise_nll(unary, edges, tables, torch.full_like(labels, 255), reduction="mean")
    loss.backward()
    assert loss.item() == 0.0 and unary.grad is not None


def test_gradient_is_softmax_minus_one_hot():
    unary, edges, tables, labels = problem(seed=3)
    tables = [t.requires_grad_(True) for t in tables]
    unary.requires_grad_(True)
    piecewise_nll(unary, edges, tables, labels).backward()
    valid = labels != 255
    expected = unary.detach().softmax(1) - torch.nn.functional.one_hot(labels.clamp(max=3), 4)
    expected[~valid] = 0
    torch.testing.assert_close(unary.grad, expected)
    e, t = edges[0], tables[0]
    keep = valid[e[:, 0]] & valid[e[:, 1]]
    g = t.grad[keep].reshape(-1, 16)
    target = labels[e[keep, 0]] * 4 + labels[e[keep, 1]]
    expected_t = t.detach()[keep].reshape(-1, 16).softmax(1) - torch.nn.functional.one_hot(
        target, 16
    )
    torch.testing.assert_close(g, expected_t)
    assert bool((t.grad[~keep] == 0).all())


def test_bad_labels_and_reduction():
    unary, edges, tables, labels = problem()
    with pytest.raises(ValueError, match="labels"):
        piecewise_nll(unary, edges, tables, torch.full_like(labels, 7))
    with pytest.raises(ValueError, match="one label per node"):
        piecewise_nll(unary, edges, tables, labels[:-1])
    with pytest.raises(TypeError, match="labels"):
        piecewise_nll(unary, edges, tables, labels.double())
    with pytest.raises(ValueError, match="reduction"):
        piecewise_nll(unary, edges, tables, labels, reduction="none")


def test_downsample_labels_majority_vote_hand_computed():
    labels = torch.tensor(
        [
            [1, 1, 2, 2, 2, 0],
            [1, 3, 2, 255, 255, 255],
            [4, 4, 255, 255, 0, 0],
            [4, 0, 255, 255, 0, 1],
        ]
    ).unsqueeze(0)
    out = downsample_labels(labels, (2, 3), num_classes=5)
    # 2 x 2 cells: [1,1,1,3] -> 1, [2,2,2,255] -> 2, [2,0,255,255] -> 50 % valid, tie -> 0;
    #              [4,4,4,0] -> 4, [255]*4 -> ignore, [0,0,0,1] -> 0
    assert out.tolist() == [[[1, 2, 0], [4, 255, 0]]]
    strict = downsample_labels(labels, (2, 3), num_classes=5, min_valid=0.75)
    assert strict[0, 0, 2].item() == 255
    # uneven cells: 5 rows into 2 -> rows {0, 1, 2} and {3, 4}
    tall = torch.tensor([[0], [0], [1], [1], [1]]).unsqueeze(0)
    assert downsample_labels(tall, (2, 1), num_classes=2).tolist() == [[[0], [1]]]


def test_downsample_labels_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        downsample_labels(torch.zeros(1, 4, 4, dtype=torch.long), (8, 8), num_classes=2)
    with pytest.raises(ValueError, match="labels"):
        downsample_labels(torch.full((1, 4, 4), 3), (2, 2), num_classes=2)
