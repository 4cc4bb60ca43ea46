"""The split Pairwise-Net (first layer per node) equals the unsplit one, values and gradients."""

from __future__ import annotations

import pytest
import torch

from deepcrf.contextual import edge_features, pairwise_scores, range_box_edges
from deepcrf.models.featmap import PairwiseNet


def _net_and_features(seed: int = 0):
    torch.manual_seed(seed)
    net = PairwiseNet(4, 2 * 10, width=0.05)
    feats = torch.randn(7 * 6, 10, requires_grad=True)
    return net, feats


@pytest.mark.parametrize("chunk", [1, 37, 10_000])
def test_split_equals_unsplit_values_and_gradients(chunk):
    net, feats = _net_and_features()
    edges = range_box_edges(7, 6, "above_below", box=0.5)
    split = pairwise_scores(feats, edges, net, 4, chunk, split=True)
    plain = pairwise_scores(feats, edges, net, 4, chunk, split=False)
    assert torch.allclose(split, plain, atol=1e-6, rtol=0)
    # the reference: the net applied to the materialised edge features
    direct = net(edge_features(feats, edges)).view(-1, 4, 4)
    assert torch.allclose(split, direct, atol=1e-6, rtol=0)
    # gradients in float64 (float32 sums over ~1,000 edges differ by rounding only)
    net, feats = net.double(), feats.detach().double().requires_grad_(True)
    split = pairwise_scores(feats, edges, net, 4, chunk, split=True)
    plain = pairwise_scores(feats, edges, net, 4, chunk, split=False)
    weights = torch.randn_like(split)
    grads_split = torch.autograd.grad((split * weights).sum(), [feats, *net.parameters()])
    grads_plain = torch.autograd.grad((plain * weights).sum(), [feats, *net.parameters()])
    for a, b in zip(grads_split, grads_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_split_on_a_few_edges_projects_only_their_nodes():
    net, feats = _net_and_features(1)
    edges = torch.tensor([[0, 5], [40, 3], [5, 0]])
    split = pairwise_scores(feats, edges, net, 4, split=True)
    assert torch.allclose(split, pairwise_scores(feats, edges, net, 4, split=False), atol=1e-6)


def test_split_is_the_default_for_the_zoo_net_and_refused_for_others():
    net, feats = _net_and_features()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))  # forward = the unsplit path
    pairwise_scores(feats, range_box_edges(7, 6), net, 4)
    assert calls == []
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 16))
    with pytest.raises(TypeError, match="project_nodes"):
        pairwise_scores(feats, range_box_edges(7, 6), mlp, 4, split=True)


def test_pairwise_net_needs_two_node_features():
    with pytest.raises(ValueError, match="even"):
        PairwiseNet(3, 7)


def test_out_of_memory_names_the_chunk_size_to_lower():
    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")

    feats = torch.randn(9, 3)
    with pytest.raises(MemoryError, match="chunk_size"):
        pairwise_scores(feats, range_box_edges(3, 3, box=1.0, grid=3), Hungry(), 2, split=False)


def test_split_net_with_a_wrong_projection_shape_is_named():
    class Flat(torch.nn.Module):
        def project_nodes(self, f):
            return torch.zeros(f.shape[0], 8)

        def score_edges(self, hidden):
            return hidden

    with pytest.raises(ValueError, match=r"project_nodes must return \(N, 2, hidden\)"):
        pairwise_scores(torch.randn(9, 3), range_box_edges(3, 3, box=1.0, grid=3), Flat(), 2)
