"""deepcrf.bandwidth: the learnable-bandwidth messages of a lattice kernel with their
bandwidth gradient deferred to one computation after all of them (``_BandwidthHub``),
against the per-message, per-point gradient path (``feature_gradient`` through autograd)."""

from __future__ import annotations

import pytest
import torch

import deepcrf.bandwidth as bandwidth_module
from deepcrf.kernel import NormalizedKernel

TRANSFORMS = ("potts", "vector", "matrix")


def _problem(seed=21, n=400, labels=4):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(n, 3, generator=g) * torch.tensor([20.0, 20.0, 60.0])
    unary = torch.randn(n, labels, generator=g)
    target = torch.randint(0, labels, (n,), generator=g)
    transforms = {
        "potts": torch.tensor(0.8),
        "vector": torch.rand(labels, generator=g) + 0.5,
        "matrix": 0.5 * torch.randn(labels, labels, generator=g),
    }
    return raw, unary, target, transforms


def _mean_field_grads(raw, unary, target, transforms, normalization, deferred):
    """Gradients of a 3-message mean field (a different transform per message) w.r.t. the
    bandwidths, the unaries and the transforms, through one kernel."""
    theta = torch.tensor([4.0, 5.0, 12.0], requires_grad=True)
    u = unary.clone().requires_grad_(True)
    ts = [t.clone().requires_grad_(True) for t in transforms]
    kernel = NormalizedKernel(raw / theta, normalization, scale_gradient_only=deferred)
    q = torch.softmax(u, 1)
    for t in ts:
        if deferred:
            logits = kernel.add_message(u, q, t)
        else:
            y = kernel.apply(q)
            logits = u + (y @ t if t.dim() == 2 else y * t)
        q = torch.softmax(logits, 1)
    torch.nn.functional.cross_entropy(logits, target).backward()
    return [theta.grad, u.grad, *[t.grad for t in ts]]


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("same_transform", [True, False])
def test_deferred_bandwidth_gradient_equals_the_per_message_path(normalization, same_transform):
    raw, unary, target, transforms = _problem()
    chosen = [transforms["vector"]] * 3 if same_transform else list(transforms.values())
    fused = _mean_field_grads(raw, unary, target, chosen, normalization, deferred=True)
    generic = _mean_field_grads(raw, unary, target, chosen, normalization, deferred=False)
    assert generic[0].abs().max() > 1e-5  # the bandwidths get a gradient
    for a, b in zip(fused, generic):
        assert torch.allclose(a, b, rtol=1e-3, atol=2e-3 * b.abs().max()), (a, b)


def test_chunked_tables_give_the_same_gradient(monkeypatch):
    """Iterations processed a few at a time (large inputs) sum to the same gradient."""
    raw, unary, target, transforms = _problem(seed=22)
    chosen = [transforms["matrix"], transforms["vector"], transforms["vector"]]
    whole = _mean_field_grads(raw, unary, target, chosen, "symmetric", deferred=True)
    monkeypatch.setattr(bandwidth_module, "TABLE_BUDGET", 1)  # one iteration per table
    chunked = _mean_field_grads(raw, unary, target, chosen, "symmetric", deferred=True)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * b.abs().max())


def _one_message(raw, unary, target):
    theta = torch.tensor([4.0, 5.0, 12.0], requires_grad=True)
    u = unary.clone().requires_grad_(True)
    kernel = NormalizedKernel(raw / theta, "symmetric", scale_gradient_only=True)
    logits = kernel.add_message(u, torch.softmax(u, 1), 0.7)
    loss = torch.nn.functional.cross_entropy(logits, target)
    return theta, u, loss


def test_a_backward_pass_that_skips_the_bandwidths_leaves_nothing_behind():
    """autograd.grad w.r.t. the unaries only runs the messages' backward but not the hub;
    what they kept must not leak into the next backward pass."""
    raw, unary, target, _ = _problem(seed=23)
    theta, u, loss = _one_message(raw, unary, target)
    (partial,) = torch.autograd.grad(loss, [u], retain_graph=True)
    loss.backward()
    fresh_theta, fresh_u, fresh_loss = _one_message(raw, unary, target)
    fresh_loss.backward()
    assert torch.allclose(theta.grad, fresh_theta.grad, rtol=1e-6)
    assert torch.allclose(partial, fresh_u.grad, rtol=1e-6)


def test_retained_graph_backward_twice_doubles_the_gradient():
    raw, unary, target, _ = _problem(seed=24)
    theta, _, loss = _one_message(raw, unary, target)
    loss.backward(retain_graph=True)
    once = theta.grad.clone()
    loss.backward()
    assert torch.allclose(theta.grad, 2 * once, rtol=1e-6)
