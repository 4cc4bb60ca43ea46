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


def _dense_lattice_operator(lattice) -> torch.Tensor:
    """The lattice filter slice · blur · splat as a dense float64 (N, N) matrix, built from
    the lattice's index and weight arrays (no float32 arithmetic)."""
    n, m = lattice.num_points, lattice.num_vertices
    splat = torch.zeros(m, n, dtype=torch.float64)
    counts = torch.diff(
        lattice.splat_offsets.long(), append=torch.tensor([lattice.splat_index.numel()])
    )
    rows = torch.repeat_interleave(torch.arange(m), counts)
    splat.index_put_(
        (rows, lattice.splat_index.long()), lattice.splat_weight.double(), accumulate=True
    )
    slice_ = torch.zeros(n, m, dtype=torch.float64)
    points = torch.arange(n)[:, None].expand_as(lattice.slice_index)
    slice_.index_put_(
        (points.reshape(-1), lattice.slice_index.long().reshape(-1)),
        lattice.slice_weight.double().reshape(-1),
        accumulate=True,
    )
    blur = torch.eye(m, dtype=torch.float64)
    index, weight = lattice.blur_stencils[0]
    for axis in range(index.shape[0]):
        step = torch.zeros(m, m, dtype=torch.float64)
        targets = torch.arange(m)[:, None].expand(m, 3)
        step.index_put_(
            (targets.reshape(-1), index[axis].long().reshape(-1)),
            weight[axis].double().reshape(-1),
            accumulate=True,
        )
        blur = step @ blur
    return slice_ @ blur @ splat


def test_bandwidth_gradient_matches_a_float64_evaluation_far_from_the_origin():
    """The identity's two terms are large and cancel where |f| is large (a spatial kernel far
    from the origin); the float32 result must still match the same lattice derivative in
    float64: d/ds of the message with K(s) = K - (s - 1) K∘(f_a,i - f_a,j)^2 (the identity's
    derivative of K along f_a -> s f_a), through the normalisation too."""
    g = torch.Generator().manual_seed(25)
    grid = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij"))
    raw = grid.reshape(2, -1).t() + torch.tensor([300.0, 200.0])  # far from the origin
    theta = torch.tensor([2.0, 3.0], requires_grad=True)
    n, labels = raw.shape[0], 3
    q = torch.softmax(torch.randn(n, labels, generator=g), 1)
    upstream = torch.randn(n, labels, generator=g)
    t = torch.rand(labels, generator=g) + 0.5
    kernel = NormalizedKernel(raw / theta, "symmetric", scale_gradient_only=True)
    out = kernel.add_message(torch.zeros(n, labels), q, t)
    (out * upstream).sum().backward()
    fused = -theta.detach() * theta.grad  # sum_i f_ia dL/df_ia

    f = (raw / theta.detach()).double()
    dense = _dense_lattice_operator(kernel.lattice)
    expected = []
    for a in range(2):
        s = torch.ones((), dtype=torch.float64, requires_grad=True)
        diff2 = (f[:, a, None] - f[None, :, a]) ** 2
        k = dense - (s - 1) * dense * diff2
        scale = 1 / torch.sqrt(k.sum(1))
        message = scale[:, None] * (k @ (scale[:, None] * q.double())) * t.double()
        (ds,) = torch.autograd.grad((message * upstream.double()).sum(), s)
        expected.append(ds)
    expected = torch.stack(expected)
    assert torch.allclose(fused.double(), expected, rtol=2e-3), (fused, expected)
