"""Lattice keys too widely spread for packed 62-bit codes: the dense-code fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import deepcrf.lattice as lattice_module
from deepcrf.lattice import build_lattice
from reference_lattice import reference_lattice_filter

FIELDS = ("splat_index", "splat_offsets", "splat_weight", "slice_index", "slice_weight")


def assert_same_lattice(a, b):
    assert a.num_vertices == b.num_vertices and a.blocks == b.blocks
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for (index_a, weight_a), (index_b, weight_b) in zip(a.blur_stencils, b.blur_stencils):
        assert torch.equal(index_a, index_b) and torch.equal(weight_a, weight_b)


@pytest.mark.parametrize(
    ("n", "d", "segments"), [(300, 2, None), (200, 5, None), (240, 3, [0, 100, 240])]
)
def test_dense_codes_build_the_same_lattice_as_packed_codes(monkeypatch, n, d, segments):
    g = torch.Generator().manual_seed(d)
    features = torch.rand(n, d, generator=g) * 4
    features[: n // 4] = torch.randint(0, 3, (n // 4, d), generator=g).float()  # ties
    packed = build_lattice(features, segments)
    monkeypatch.setattr(lattice_module, "_MAX_PACKED_BITS", 1)  # every key overflows
    assert_same_lattice(build_lattice(features, segments), packed)


def test_keys_beyond_64_bits_match_the_loop_reference(monkeypatch):
    g = torch.Generator().manual_seed(7)
    # spread 60 in 12 dimensions: about 12 x 6 bits of packed key, beyond 62 (small
    # magnitudes keep float32's barycentric weights as precise as the reference's)
    features = torch.rand(80, 12, generator=g) * 60
    features[40:] = features[:40] + torch.rand(40, 12, generator=g)  # pairs that interact
    values = torch.randn(80, 2, generator=g)
    ref, m = reference_lattice_filter(features.numpy(), values.double().numpy())
    calls = []
    dense = lattice_module._dense_vertex_codes
    monkeypatch.setattr(
        lattice_module, "_dense_vertex_codes", lambda *a: calls.append(1) or dense(*a)
    )
    lattice = build_lattice(features)
    assert calls  # the packed codes did overflow
    assert lattice.num_vertices == m
    np.testing.assert_allclose(lattice.filter(values).double().numpy(), ref, rtol=1e-4, atol=1e-5)
    for transpose in (False, True):  # the blur found the neighbours the reference uses
        ref_t, _ = reference_lattice_filter(features.numpy(), values.double().numpy(), transpose)
        out = lattice.filter(values, transpose=transpose).double().numpy()
        np.testing.assert_allclose(out, ref_t, rtol=1e-4, atol=1e-5)
