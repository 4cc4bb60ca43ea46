"""CRFParams with per-class (vector) and full (matrix) compatibilities, as --method fit writes
them: validation, JSON round trip, and refine() computing the same as the Potts weight."""

from __future__ import annotations

import numpy as np
import pytest

from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.dense import refine
from deepcrf.params import CRFParams


def test_vector_and_matrix_compat_round_trip(tmp_path):
    params = CRFParams(bilateral_compat=[-4.0, -3.0, -5.0], gaussian_compat=[[-3, 1], [0.5, -2]])
    data = params.to_dict()
    assert data["bilateral_compat"] == [-4.0, -3.0, -5.0]
    assert data["gaussian_compat"] == [[-3.0, 1.0], [0.5, -2.0]]
    assert CRFParams.load(params.save(tmp_path / "p.json")) == params


def test_bad_compat_values_are_refused():
    with pytest.raises(ValueError, match="square"):
        CRFParams(bilateral_compat=[[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="finite"):
        CRFParams(bilateral_compat=[1.0, float("nan")])
    with pytest.raises(ValueError, match=">= 0"):
        CRFParams(bilateral_compat=-1.0)
    with pytest.raises(ValueError, match="got \\[\\]"):
        CRFParams(gaussian_compat=[])


def test_potts_as_vector_and_matrix_refines_the_same():
    image, label = SyntheticScenes(1, size=(24, 30), seed=0, num_classes=4).generate(0)
    probs = coarse_probabilities(label, 4, seed=0)
    potts = refine(probs, image, **CRFParams(bilateral_compat=4.0).to_dict())
    vector = refine(probs, image, **CRFParams(bilateral_compat=[-4.0] * 4).to_dict())
    matrix = refine(probs, image, **CRFParams(bilateral_compat=(-4 * np.eye(4)).tolist()).to_dict())
    np.testing.assert_allclose(vector, potts, atol=1e-5)
    np.testing.assert_allclose(matrix, potts, atol=1e-5)
