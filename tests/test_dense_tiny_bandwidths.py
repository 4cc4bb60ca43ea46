"""refine with bandwidths so small that packed lattice keys overflow: pydensecrf parity."""

from __future__ import annotations

import numpy as np
import pytest

import deepcrf.lattice as lattice_module
from deepcrf import refine

densecrf = pytest.importorskip("pydensecrf.densecrf")


def test_tiny_colour_bandwidth_matches_pydensecrf(monkeypatch):
    calls = []
    dense = lattice_module._dense_vertex_codes
    monkeypatch.setattr(
        lattice_module, "_dense_vertex_codes", lambda *a: calls.append(1) or dense(*a)
    )
    rng = np.random.default_rng(0)
    h, w, labels = 24, 32, 4
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = image[0, 0]  # a flat region: neighbours that do interact
    probs = rng.dirichlet(np.ones(labels), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    ours = refine(
        probs,
        image,
        iterations=5,
        gaussian_sxy=3,
        gaussian_compat=3,
        bilateral_sxy=80,
        bilateral_srgb=0.01,
        bilateral_compat=5,
    )
    crf = densecrf.DenseCRF2D(w, h, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(probs, 1e-5)).reshape(labels, -1)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=0.01, rgbim=image, compat=5)
    expected = np.array(crf.inference(5)).reshape(labels, h, w)
    assert calls  # srgb = 0.01 spreads the keys beyond packed 62-bit codes
    assert np.abs(ours - expected).max() < 1e-3
    assert (ours.argmax(0) == expected.argmax(0)).mean() >= 0.999
