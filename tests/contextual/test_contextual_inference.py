"""General mean field against an independent loop implementation, fixed points, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from deepcrf.contextual import mean_field, range_box_edges


def loop_mean_field(unaries, types, iterations):
    """Independent reference: node by node, edge by edge, pure Python floats."""
    n, k = len(unaries[0]), len(unaries[0][0])
    z = [[sum(u[p][c] for u in unaries) for c in range(k)] for p in range(n)]

    def normalise(scores):
        m = max(scores)
        e = [math.exp(s - m) for s in scores]
        return [x / sum(e) for x in e]

    q = [normalise(z[p]) for p in range(n)]
    for _ in range(iterations):
        new = []
        for p in range(n):
            s = list(z[p])
            for edges, table in types:
                for e, (a, b) in enumerate(edges):
                    for c in range(k):
                        if a == p:  # p is the first node: rows of z_pq
                            s[c] += sum(table[e][c][m] * q[b][m] for m in range(k))
                        if b == p:  # p is the second node: columns of z_qp
                            s[c] += sum(table[e][m][c] * q[a][m] for m in range(k))
            new.append(normalise(s))
        q = new
    return torch.tensor(q, dtype=torch.float64)


def random_problem(h=4, w=5, k=3, seed=0, relations=("surrounding", "above_below")):
    g = torch.Generator().manual_seed(seed)
    n = h * w
    unary = torch.randn(n, k, generator=g, dtype=torch.float64)
    edges = [range_box_edges(h, w, r, box=0.5) for r in relations]
    tables = [torch.randn(e.shape[0], k, k, generator=g, dtype=torch.float64) for e in edges]
    return unary, edges, tables


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_matches_loop_reference_with_two_asymmetric_types(iterations):
    unary, edges, tables = random_problem()
    got = mean_field(unary, edges, tables, iterations=iterations)
    ref = loop_mean_field(
        [unary.tolist()],
        [(e.tolist(), t.tolist()) for e, t in zip(edges, tables, strict=True)],
        iterations,
    )
    assert got.dtype == torch.float64 and got.shape == unary.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_single_type_and_unary_ensemble_match_reference():
    unary, edges, tables = random_problem(relations=("above_below",), seed=1)
    second = torch.randn_like(unary)
    got = mean_field([unary, second], edges[0], tables[0], iterations=3)
    ref = loop_mean_field(
        [unary.tolist(), second.tolist()], [(edges[0].tolist(), tables[0].tolist())], 3
    )
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_hand_computed_two_node_chain():
    # one edge (0 -> 1), K = 2, z_01 rewards (0, 1) only; node 1 is certain of class 1.
    unary = torch.tensor([[0.0, 0.0], [-50.0, 50.0]], dtype=torch.float64)
    table = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    q = mean_field(unary, torch.tensor([[0, 1]]), table, iterations=1)
    expected0 = torch.softmax(torch.tensor([2.0, 0.0], dtype=torch.float64), 0)
    torch.testing.assert_close(q[0], expected0)
    # the reversed edge sends the message through the columns instead: no effect on node 0
    q = mean_field(unary, torch.tensor([[1, 0]]), table, iterations=1)
    torch.testing.assert_close(q[0], torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_shared_edges_and_flat_tables_are_accepted():
    unary, edges, tables = random_problem(relations=("surrounding",), seed=5)
    second = torch.randn_like(tables[0])
    both = mean_field(unary, edges[0], [tables[0], second])
    torch.testing.assert_close(both, mean_field(unary, edges * 2, [tables[0], second]))
    torch.testing.assert_close(both, mean_field(unary, edges[0], [tables[0] + second]))
    flat = mean_field(unary, edges[0], tables[0].flatten(1))
    torch.testing.assert_close(flat, mean_field(unary, edges[0], tables[0]))


def test_zero_pairwise_returns_softmax_of_unaries():
    unary, edges, tables = random_problem()
    zeros = [torch.zeros_like(t) for t in tables]
    torch.testing.assert_close(mean_field(unary, edges, zeros, iterations=5), unary.softmax(1))


def test_many_iterations_reach_a_fixed_point_of_the_update():
    unary, edges, tables = random_problem(seed=3)
    tables = [0.05 * t for t in tables]  # weak coupling: the update is a contraction
    q = mean_field(unary, edges, tables, iterations=60)
    q_next = mean_field(unary, edges, tables, iterations=61)
    torch.testing.assert_close(q, q_next, rtol=0, atol=1e-12)
    assert torch.allclose(q.sum(1), torch.ones(q.shape[0], dtype=torch.float64))


def test_gradients_against_finite_differences():
    unary, edges, tables = random_problem(h=3, w=3, k=2, seed=4)
    unary.requires_grad_(True)
    for t in tables:
        t.requires_grad_(True)
    weights = torch.randn(9, 2, dtype=torch.float64)

    def f(u, t0, t1):
        return (mean_field(u, edges, [t0, t1], iterations=3) * weights).sum()

    assert torch.autograd.gradcheck(f, (unary, *tables))


def test_float32_inputs_stay_float32_and_mixed_promote():
    unary, edges, tables = random_problem()
    assert mean_field(unary.float(), edges, [t.float() for t in tables]).dtype == torch.float32
    assert mean_field(unary.float(), edges, tables).dtype == torch.float64


def test_bad_inputs_raise_clear_errors():
    unary, edges, tables = random_problem()
    with pytest.raises(ValueError, match="pairwise"):
        mean_field(unary, edges[0], tables[0][:, :2])
    with pytest.raises(ValueError, match="edges"):
        mean_field(unary, edges[0] + 100, tables[0])
    with pytest.raises(ValueError, match="same number"):
        mean_field(unary, edges, tables[:1])
    with pytest.raises(TypeError, match="list of tables"):
        mean_field(unary, edges, tables[0])
    with pytest.raises(ValueError, match="unary"):
        mean_field(unary[0], edges, tables)
    with pytest.raises(ValueError, match="iterations"):
        mean_field(unary, edges, tables, iterations=-1)
