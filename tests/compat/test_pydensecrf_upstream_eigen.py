"""pydensecrf's pydensecrf/tests/test_eigen.py against the shim's eigen module (imports
changed only), plus the wrappers' use as CRF inputs."""

from __future__ import annotations

import numpy as np
import pytest

import deepcrf.compat.pydensecrf.densecrf as dcrf
import deepcrf.compat.pydensecrf.eigen as e

RNG = np.random.default_rng(0)


def test_vector_conversion():
    np_vector = RNG.standard_normal(3).astype(np.float32)
    c_vector = e.vectorXf(np_vector)
    assert np.all(np.array(c_vector) == np_vector)


def test_matrix_conversion():
    np_matrix = RNG.standard_normal((3, 3)).astype(np.float32)
    assert np_matrix.ndim == 2
    c_matrix = e.matrixXf(np_matrix)
    assert np.all(np.array(c_matrix) == np_matrix)


def test_wrong_dims():
    np_matrix = RNG.standard_normal((3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError):
        e.matrixXf(np_matrix)


def test_wrong_type():
    np_matrix = RNG.standard_normal((3, 3)).astype(np.float64)
    with pytest.raises(ValueError):
        e.matrixXf(np_matrix)


def test_none_type():
    with pytest.raises(TypeError):
        e.matrixXf(None)


def test_wrappers_copy_and_feed_the_crf():
    rng = np.random.default_rng(0)
    unary = rng.random((3, 20)).astype(np.float32)
    wrapped = e.matrixXf(unary)
    unary[:] = 0  # the wrapper holds a copy, as Eigen's does
    assert np.array(wrapped).any() and e.MatrixXf().shape == (0, 0)
    feats = rng.random((2, 20)).astype(np.float32)
    results = []
    for u, f, compat in (
        (wrapped, e.matrixXf(feats), e.vectorXf(np.array([1, 2, 3], np.float32))),
        (np.array(wrapped), feats, np.array([1, 2, 3], np.float32)),
    ):
        d = dcrf.DenseCRF(20, 3)
        d.setUnaryEnergy(u)
        d.addPairwiseEnergy(f, compat=compat)
        q, tmp1, tmp2 = d.startInference()
        d.stepInference(q, tmp1, tmp2)
        results.append((np.array(d.inference(3)), np.array(q)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
