"""contextual.mean_field runs the library's one loop (crf.mean_field) with GraphMessages:
same marginals and gradients as the paper's update written out here."""

from __future__ import annotations

import pytest
import torch

from deepcrf import crf
from deepcrf.contextual import mean_field
from deepcrf.contextual.inference import GraphMessages, pairwise_types


def paper_update(z, types, iterations):
    """Q_p ∝ exp(z_p + Σ_{(p,q)} z_pq Q_q + Σ_{(q,p)} z_qp^T Q_q), dense sums over edges."""
    q = torch.softmax(z, dim=1)
    for _ in range(iterations):
        message = torch.zeros_like(z)
        for edges, table in types:
            for e, (p, r) in enumerate(edges.tolist()):
                message[p] += table[e] @ q[r]
                message[r] += table[e].t() @ q[p]
        q = torch.softmax(z + message, dim=1)
    return q


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contextual_mean_field_equals_the_written_out_update(dtype, monkeypatch):
    g = torch.Generator().manual_seed(0)
    n, k = 12, 4
    z = torch.randn(n, k, generator=g, dtype=dtype)
    edges = [torch.randint(0, n, (20, 2), generator=g), torch.randint(0, n, (7, 2), generator=g)]
    tables = [torch.randn(20, k, k, generator=g, dtype=dtype) for _ in range(1)] + [
        torch.randn(7, k, k, generator=g, dtype=dtype)
    ]
    leaf = [t.clone().requires_grad_(True) for t in tables]
    calls = []
    original = crf.mean_field

    def spy(*args, **kwargs):
        calls.append(type(args[1]).__name__)
        return original(*args, **kwargs)

    monkeypatch.setattr("deepcrf.contextual.inference._mean_field", spy)
    q = mean_field(z, edges, leaf, iterations=4)
    assert calls == ["GraphMessages"] and q.dtype == dtype
    ref_leaf = [t.clone().requires_grad_(True) for t in tables]
    ref = paper_update(z, pairwise_types(edges, ref_leaf, n, k), 4)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(q, ref, atol=tol)
    w = torch.randn(n, k, generator=g, dtype=dtype)
    (q * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(leaf, ref_leaf):
        assert torch.allclose(a.grad, b.grad, atol=tol * 10)


def test_graph_messages_is_a_message_passing_for_the_core_loop():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g)
    types = pairwise_types(torch.tensor([[0, 1], [2, 3]]), torch.randn(2, 3, 3, generator=g), 6, 3)
    messages = GraphMessages(types)
    q = crf.mean_field(z, messages, 2, checkpoint=True)  # the loop's options apply too
    assert torch.allclose(q, paper_update(z, types, 2), atol=1e-6)
