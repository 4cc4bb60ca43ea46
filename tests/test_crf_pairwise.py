"""crf.Pairwise: the stacked no-gradient path, the custom autograd message and the
per-kernel autograd path (stack=False) agree, for Potts, diagonal and full compatibilities
and asymmetric normalisations; mean_field's checkpointing gives the same gradients."""

from __future__ import annotations

import pytest
import torch

from deepcrf.crf import Kernel, Pairwise, mean_field

G = torch.Generator().manual_seed


def kernels(normalization, learn=False):
    g = G(0)
    n, labels = 150, 4
    f1 = torch.rand(n, 2, generator=g) * 4
    f2 = torch.rand(n, 3, generator=g) * 3
    diag = (torch.rand(labels, generator=g) - 1.5).requires_grad_(learn)
    full = torch.randn(labels, labels, generator=g).requires_grad_(learn)
    return [
        Kernel(f1, 2.5, normalization),  # Potts weight, folded into the slice
        Kernel(f2, diag, normalization),
        Kernel(f1 * 0.7, full, normalization),
    ], [diag, full]


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
def test_paths_agree_on_messages_and_gradients(normalization):
    ks, _ = kernels(normalization)
    q = torch.softmax(torch.randn(150, 4, generator=G(1)), 1)
    logits = torch.randn(150, 4, generator=G(2))
    fast = Pairwise(ks, 4).add_message(logits, q)  # no gradient: one stacked pass
    results = []
    for stack in (True, False):
        ks, leaves = kernels(normalization, learn=True)
        x = q.clone().requires_grad_(True)
        out = Pairwise(ks, 4, stack=stack).add_message(logits, x)
        (out * torch.randn(150, 4, generator=G(3))).sum().backward()
        results.append([out.detach(), x.grad, *[t.grad for t in leaves]])
    assert torch.allclose(fast, results[0][0], atol=1e-5)
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max())


def test_checkpointed_mean_field_equals_the_plain_loop():
    ks, leaves = kernels("symmetric", learn=True)
    unary = torch.randn(150, 4, generator=G(4), requires_grad=True)
    grads = []
    for checkpoint in (False, True):
        pairwise = Pairwise(ks, 4)
        q, logits = mean_field(unary, pairwise, 5, return_logits=True, checkpoint=checkpoint)
        grads.append(torch.autograd.grad((logits * q).sum(), [unary, *leaves]))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_released_kernels_keep_messages_and_refuse_gradients():
    g = torch.Generator().manual_seed(0)
    positions = torch.rand(80, 2, generator=g) * 6
    colours = torch.rand(80, 3, generator=g) * 4
    q = torch.softmax(torch.randn(80, 4, generator=g), 1)
    compat = torch.tensor([-1.0, -2.0, -0.5, -1.5])  # a diagonal: a label transform
    kernels = [Kernel(positions, 3.0), Kernel(torch.cat([positions, colours], 1), compat)]
    pairwise = Pairwise(kernels, 4)
    before, bound = pairwise.message(q), pairwise.message_bound
    pairwise.release_kernels()
    assert torch.equal(pairwise.message(q), before)
    assert pairwise.message_bound == bound
    assert pairwise.kernels == [None, None]  # the stack copied what the messages need
    with pytest.raises(RuntimeError, match="release_kernels"):
        pairwise.message(q.clone().requires_grad_(True))
