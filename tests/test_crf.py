"""Mean field: against an independent dense (N x N) implementation, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.crf import Kernel, Pairwise, compat_matrix, mean_field


def brute_force_mean_field(unary, kernels, iterations):
    """Textbook mean field with explicit kernel matrices, float64 numpy."""
    u = unary.astype(np.float64)
    q = np.exp(u - u.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    mats = []
    for feats, mu, normalization in kernels:
        diff = feats[:, None, :] - feats[None, :, :]
        k = np.exp(-0.5 * (diff**2).sum(-1))
        norm = k.sum(1)
        if normalization == "symmetric":
            k = k / np.sqrt(norm)[:, None] / np.sqrt(norm)[None, :]
        elif normalization == "before":
            k = k / norm[None, :]
        elif normalization == "after":
            k = k / norm[:, None]
        mats.append((k, mu))
    for _ in range(iterations):
        logits = u.copy()
        for k, mu in mats:
            logits -= (k @ q) @ mu.T
        q = np.exp(logits - logits.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q


def small_problem(n=70, num_labels=4, seed=0):
    rng = np.random.default_rng(seed)
    unary = rng.normal(size=(n, num_labels)).astype(np.float32)
    f1 = (rng.random((n, 2)) * 3).astype(np.float32)
    f2 = (rng.random((n, 5)) * 3).astype(np.float32)
    return unary, f1, f2


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
@pytest.mark.parametrize("compat_kind", ["potts", "diag", "full"])
def test_exact_mean_field_matches_brute_force(normalization, compat_kind):
    unary, f1, f2 = small_problem()
    rng = np.random.default_rng(1)
    compat = {
        "potts": 2.0,
        "diag": torch.from_numpy(-rng.random(4).astype(np.float32) * 2),
        "full": torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32)),  # asymmetric
    }[compat_kind]
    kernels = [
        Kernel(torch.from_numpy(f1), 1.5, normalization),
        Kernel(torch.from_numpy(f2), compat, normalization),
    ]
    pairwise = Pairwise(kernels, 4, filter="exact")
    q = mean_field(torch.from_numpy(unary), pairwise, iterations=5)
    ref = brute_force_mean_field(
        unary,
        [
            (f1, compat_matrix(1.5, 4).numpy(), normalization),
            (f2, compat_matrix(compat, 4).numpy(), normalization),
        ],
        5,
    )
    np.testing.assert_allclose(q.numpy(), ref, atol=2e-5)


@pytest.mark.parametrize("compat", [3.0, "diag", "full"])
def test_lattice_mean_field_close_to_exact(compat):
    unary, f1, f2 = small_problem(n=400, seed=2)
    if compat == "diag":
        compat = torch.tensor([-3.0, -1.0, -2.0, -0.5])
    elif compat == "full":
        compat = -3.0 * torch.eye(4) + 0.5 * torch.rand(
            4, 4, generator=torch.Generator().manual_seed(0)
        )
    kernels = [Kernel(torch.from_numpy(f1), 2.0), Kernel(torch.from_numpy(f2), compat)]
    u = torch.from_numpy(unary)
    exact = mean_field(u, Pairwise(kernels, 4, filter="exact"), 5)
    approx = mean_field(u, Pairwise(kernels, 4), 5)
    assert (exact - approx).abs().mean() < 0.02
    assert (exact.argmax(1) == approx.argmax(1)).float().mean() > 0.95


def test_zero_iterations_and_no_kernels_give_softmax():
    unary, f1, _ = small_problem()
    u = torch.from_numpy(unary)
    expected = torch.softmax(u, 1)
    assert torch.allclose(mean_field(u, Pairwise([Kernel(torch.from_numpy(f1))], 4), 0), expected)
    assert torch.allclose(mean_field(u, Pairwise([], 4), 10), expected)


def test_pairwise_pulls_towards_neighbours():
    # two well separated clusters; one point with a wrong weak unary inside each cluster
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 0.3, (30, 2)), rng.normal(10, 0.3, (30, 2))])
    unary = np.zeros((60, 2), np.float32)
    unary[:30, 0], unary[30:, 1] = 2.0, 2.0
    unary[0] = [0.0, 0.5]
    unary[30] = [0.5, 0.0]
    pairwise = Pairwise([Kernel(torch.from_numpy(feats).float(), 5.0)], 2)
    labels = mean_field(torch.from_numpy(unary), pairwise, 5).argmax(1)
    assert labels[:30].eq(0).all() and labels[30:].eq(1).all()


def test_batch_segments_equal_separate_runs():
    unary, f1, f2 = small_problem(n=120, seed=4)
    u, a, b = torch.from_numpy(unary), torch.from_numpy(f1), torch.from_numpy(f2)
    joint = mean_field(u, Pairwise([Kernel(a, 2.0), Kernel(b, 4.0)], 4, [0, 50, 120]), 4)
    first = mean_field(u[:50], Pairwise([Kernel(a[:50], 2.0), Kernel(b[:50], 4.0)], 4), 4)
    second = mean_field(u[50:], Pairwise([Kernel(a[50:], 2.0), Kernel(b[50:], 4.0)], 4), 4)
    assert torch.allclose(joint, torch.cat([first, second]), atol=1e-5)


def test_extreme_unaries_stay_finite():
    unary, f1, _ = small_problem()
    u = torch.from_numpy(unary) * 1e4
    q = mean_field(u, Pairwise([Kernel(torch.from_numpy(f1), 10.0)], 4), 5)
    assert torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(len(q)))


def test_single_label():
    q = mean_field(torch.zeros(5, 1), Pairwise([Kernel(torch.rand(5, 2))], 1), 3)
    assert torch.equal(q, torch.ones(5, 1))


def test_callback_and_logits():
    unary, f1, _ = small_problem()
    seen = []
    q, logits = mean_field(
        torch.from_numpy(unary),
        Pairwise([Kernel(torch.from_numpy(f1))], 4),
        3,
        callback=lambda t, q: seen.append(t),
        return_logits=True,
    )
    assert seen == [0, 1, 2]
    assert torch.allclose(torch.softmax(logits, 1), q)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernels": [Kernel(torch.rand(5, 2), torch.ones(3))]}, "compat"),
        ({"kernels": [Kernel(torch.rand(5, 2), 1.0, "sideways")]}, "normalization"),
        ({"kernels": [Kernel(torch.rand(5, 2)), Kernel(torch.rand(6, 2))]}, "points"),
        ({"kernels": [Kernel(torch.rand(5))]}, "features"),
        ({"kernels": [], "filter": "fft"}, "filter"),
    ],
)
def test_bad_pairwise_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Pairwise(num_labels=4, **kwargs)


class _NoBound:
    """The same pairwise model without its message bound: forces the softmax path."""

    def __init__(self, pairwise):
        self.add_message = pairwise.add_message


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
def test_message_bound_holds_and_exp_path_equals_softmax_path(normalization):
    unary, f1, f2 = small_problem(n=300, seed=6)
    compat = torch.tensor([[-2.0, 1.0, 0.5, 0.0]] * 4)
    kernels = [
        Kernel(torch.from_numpy(f1), 3.0, normalization),
        Kernel(torch.from_numpy(f2), compat, normalization),
    ]
    for filt in ("lattice", "exact"):
        pairwise = Pairwise(kernels, 4, filter=filt)
        q = torch.rand(300, 4)
        assert pairwise.message(q).abs().max() <= pairwise.message_bound * (1 + 1e-5)
        u = torch.from_numpy(unary) * 5
        fast = mean_field(u, pairwise, 5)
        slow = mean_field(u, _NoBound(pairwise), 5)
        torch.testing.assert_close(fast, slow, atol=2e-6, rtol=1e-5)


def test_large_weights_fall_back_to_the_softmax_path():
    unary, f1, _ = small_problem()
    pairwise = Pairwise([Kernel(torch.from_numpy(f1), 500.0)], 4)
    assert pairwise.message_bound > 60
    q = mean_field(torch.from_numpy(unary), pairwise, 5)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, mean_field(torch.from_numpy(unary), _NoBound(pairwise), 5))


def test_exp_path_with_unaries_far_from_zero_is_shifted_and_correct():
    unary, f1, _ = small_problem()
    u = torch.from_numpy(unary) - 500.0  # outside exp's range unless shifted
    pairwise = Pairwise([Kernel(torch.from_numpy(f1), 3.0)], 4)
    torch.testing.assert_close(mean_field(u, pairwise, 4), mean_field(u, _NoBound(pairwise), 4))
