"""pydensecrf's tests/test_utils.py against the shim's utils (imports changed only), plus the
2-D reference feature functions against the N-D ones (the relation pydensecrf documents)."""

from __future__ import annotations

import numpy as np

import deepcrf.compat.pydensecrf.utils as utils


def test_unary():
    M = 3
    U, P, N = 1.0 / M, 0.8, 0.2 / (M - 1)  # Uniform, Positive, Negative
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    unary = -np.log(
        np.array(
            [
                [U, P, N, N, N, N, P, U],
                [U, N, P, N, N, P, N, U],
                [U, N, N, P, P, N, N, U],
            ]
        )
    )
    np.testing.assert_almost_equal(utils.compute_unary(labels, M, GT_PROB=P), unary)


def test_2d_references_equal_nd_functions():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        utils._create_pairwise_gaussian_2d(2.0, 3.0, (6, 9)),
        utils.create_pairwise_gaussian((2.0, 3.0), (6, 9)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        utils._create_pairwise_bilateral_2d(2.0, 3.0, 5.0, 7.0, 11.0, img),
        utils.create_pairwise_bilateral((2.0, 3.0), (5.0, 7.0, 11.0), img, chdim=2),
        rtol=1e-6,
    )
