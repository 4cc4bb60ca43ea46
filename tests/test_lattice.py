"""Permutohedral lattice: against a loop-based port, exact filtering, and its algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcrf.exact import exact_filter
from deepcrf.lattice import build_lattice, stack_lattices
from reference_lattice import reference_lattice_filter


def random_features(n: int, d: int, seed: int, spread: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) * spread


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_loop_reference(d, reverse):
    feats = random_features(60, d, seed=d)
    vals = torch.randn(60, 3, generator=torch.Generator().manual_seed(1))
    lattice = build_lattice(feats)
    ours = lattice.filter(vals, transpose=reverse).double().numpy()
    ref, m = reference_lattice_filter(feats.numpy(), vals.numpy().astype(np.float64), reverse)
    assert lattice.num_vertices == m
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_wide_features_use_64_bit_codes_and_still_match():
    feats = random_features(60, 6, seed=11, spread=100.0)  # codes need more than 31 bits
    vals = torch.randn(60, 2, generator=torch.Generator().manual_seed(3))
    ref, m = reference_lattice_filter(feats.numpy(), vals.double().numpy())
    lattice = build_lattice(feats)
    assert lattice.num_vertices == m
    np.testing.assert_allclose(lattice.filter(vals).double().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_integer_grid_features_hit_ties_like_reference():
    # points exactly on lattice boundaries exercise rounding and rank tie-breaking
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    feats = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1) / 1.5
    vals = torch.randn(42, 2, generator=torch.Generator().manual_seed(0))
    ref, m = reference_lattice_filter(feats.numpy(), vals.double().numpy())
    lattice = build_lattice(feats)
    assert lattice.num_vertices == m
    np.testing.assert_allclose(lattice.filter(vals).double().numpy(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d", [2, 5])
def test_normalised_filter_approximates_exact_gaussian(d):
    feats = random_features(400, d, seed=3, spread=4.0)
    vals = torch.rand(400, 4, generator=torch.Generator().manual_seed(2))
    lattice = build_lattice(feats)
    approx = lattice.filter(vals) / lattice.filter(torch.ones(400, 1))
    exact = exact_filter(feats, vals) / exact_filter(feats, torch.ones(400, 1))
    err = (approx - exact).abs()
    assert err.mean() < 0.03
    assert err.max() < 0.15


def test_transpose_is_adjoint():
    feats = random_features(300, 3, seed=5)
    lattice = build_lattice(feats)
    x = torch.randn(300, 2, dtype=torch.float32)
    y = torch.randn(300, 2, dtype=torch.float32)
    lhs = (lattice.filter(x) * y).sum()
    rhs = (x * lattice.filter(y, transpose=True)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
)
def test_linearity(n, d, seed, a, b):
    feats = random_features(n, d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
    lattice = build_lattice(feats)
    lhs = lattice.filter(a * x + b * y)
    rhs = a * lattice.filter(x) + b * lattice.filter(y)
    assert torch.allclose(lhs, rhs, atol=1e-4 * (1 + abs(a) + abs(b)) * n)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 50), d=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_point_permutation_commutes(n, d, seed):
    feats = random_features(n, d, seed)
    vals = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7))
    out = build_lattice(feats).filter(vals)
    out_perm = build_lattice(feats[perm]).filter(vals[perm])
    assert torch.allclose(out[perm], out_perm, rtol=1e-5, atol=1e-5)


def test_channels_are_independent():
    feats = random_features(100, 3, seed=9)
    vals = torch.randn(100, 5)
    lattice = build_lattice(feats)
    full = lattice.filter(vals)
    for c in range(5):
        assert torch.allclose(full[:, c], lattice.filter(vals[:, c : c + 1])[:, 0], atol=1e-6)


def test_segments_keep_point_sets_apart():
    a, b = random_features(50, 3, seed=1), random_features(70, 3, seed=2)
    va, vb = torch.randn(50, 2), torch.randn(70, 2)
    together = build_lattice(torch.cat([a, b]), segments=[0, 50, 120])
    out = together.filter(torch.cat([va, vb]))
    assert torch.allclose(out[:50], build_lattice(a).filter(va), atol=1e-6)
    assert torch.allclose(out[50:], build_lattice(b).filter(vb), atol=1e-6)
    # identical features in two sets still never mix
    twin = build_lattice(torch.cat([a, a]), segments=[0, 50, 100])
    out = twin.filter(torch.cat([va, torch.zeros_like(va)]))
    assert torch.count_nonzero(out[50:]) == 0


def test_stacked_lattice_sums_filters_and_scale_folds():
    feats_a, feats_b = random_features(80, 2, seed=3), random_features(80, 5, seed=4)
    la, lb = build_lattice(feats_a), build_lattice(feats_b)
    vals = torch.rand(80, 3)
    s1, s2 = torch.rand(80) + 0.5, torch.rand(80) + 0.5
    stacked = stack_lattices([la.scale(s1, s2), lb])
    expected = s2[:, None] * la.filter(s1[:, None] * vals) + lb.filter(vals)
    assert torch.allclose(stacked.filter(vals), expected, atol=1e-5)
    assert stacked.blocks == (0, la.num_vertices, la.num_vertices + lb.num_vertices)
    with pytest.raises(ValueError, match="transpose"):
        stacked.filter(vals, transpose=True)


def test_single_point_and_degenerate_features():
    lattice = build_lattice(torch.zeros(1, 3))
    out = lattice.filter(torch.ones(1, 1))
    assert torch.isfinite(out).all() and out.item() > 0
    same = build_lattice(torch.zeros(10, 2))  # all points identical
    out = same.filter(torch.ones(10, 1))
    assert torch.allclose(out, out[0].expand_as(out))


@pytest.mark.parametrize(
    "features, match",
    [
        (torch.zeros(5), "features"),
        (torch.zeros(0, 2), "features"),
        (torch.tensor([[0.0, float("nan")]]), "NaN"),
        (torch.tensor([[0.0, 1e30]]), "range"),
        (torch.tensor([[0.0] * 6, [2e7] * 6]), "range"),
    ],
)
def test_bad_features_raise(features, match):
    with pytest.raises(ValueError, match=match):
        build_lattice(features)


def test_bad_values_shape_raises():
    lattice = build_lattice(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="values"):
        lattice.filter(torch.zeros(5, 1))


@pytest.mark.parametrize("sparse_table", [True, False])
@pytest.mark.parametrize("rounds", [0, 4])
@pytest.mark.parametrize("count", [1, 7, 3000])
def test_code_lookup_matches_binary_search(monkeypatch, count, rounds, sparse_table):
    """Hash lookups, with lookups still probing after ``rounds`` rounds finished by binary
    search (0: every lookup not settled at its home slot), against torch.isin; in the
    sparser table of up to ``_SPARSE_HASH_KEYS`` codes and in the denser one above."""
    import deepcrf.lattice as lattice_module
    from deepcrf.lattice import _find_codes

    monkeypatch.setattr(lattice_module, "_PROBE_ROUNDS", rounds)
    if not sparse_table:
        monkeypatch.setattr(lattice_module, "_SPARSE_HASH_KEYS", 0)

    g = torch.Generator().manual_seed(count)
    # clustered codes (multiples of 977) and present, absent and negative targets, as the
    # blur stencil's neighbour codes are
    codes = torch.unique(torch.randint(0, 4 * count + 1, (count,), generator=g) * 977)
    codes = codes.to(torch.int32)
    noise = torch.randint(-5000, 5000, (codes.numel(),), generator=g, dtype=torch.int32)
    targets = torch.stack([codes, codes + 1, codes - 977, noise])
    position, found = _find_codes(codes, targets)
    assert torch.equal(found, torch.isin(targets, codes))
    assert torch.equal(codes[position[found]], targets[found])
    assert int(position.min()) >= 0 and int(position.max()) < codes.numel()
    wide_position, wide_found = _find_codes(codes.long(), targets.long())  # binary search
    assert torch.equal(wide_found, found) and torch.equal(wide_position[found], position[found])
