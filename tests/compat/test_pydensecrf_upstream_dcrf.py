"""pydensecrf's own tests (pydensecrf/tests/test_dcrf.py, tests/issue26.py, tests/issue29.py of
https://github.com/lucasb-eyer/pydensecrf) run against the shim: same inputs, same checks, only
the imports changed. The one deliberate leniency (a float64 compatibility vector is accepted
and computed like its float32 copy, where pydensecrf raises) is checked as such."""

from __future__ import annotations

import numpy as np
import pytest

import deepcrf.compat.pydensecrf.densecrf as dcrf
import deepcrf.compat.pydensecrf.utils as utils


def _get_simple_unary():
    unary1 = np.zeros((10, 10), dtype=np.float32)
    unary1[:, [0, -1]] = unary1[[0, -1], :] = 1
    unary2 = np.zeros((10, 10), dtype=np.float32)
    unary2[4:7, 4:7] = 1
    unary = np.vstack([unary1.flat, unary2.flat])
    return (unary + 1) / (np.sum(unary, axis=0) + 2)


def _get_simple_img():
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    img[2:8, 2:8, :] = 255
    return img


def test_call_dcrf2d():
    d = dcrf.DenseCRF2D(10, 10, 2)
    d.setUnaryEnergy(-np.log(_get_simple_unary()))
    d.addPairwiseBilateral(sxy=2, srgb=2, rgbim=_get_simple_img(), compat=3)
    np.argmax(d.inference(10), axis=0).reshape(10, 10)


def test_call_dcrf():
    d = dcrf.DenseCRF(100, 2)
    d.setUnaryEnergy(-np.log(_get_simple_unary()))
    feats = utils.create_pairwise_bilateral(sdims=(2, 2), schan=2, img=_get_simple_img(), chdim=2)
    d.addPairwiseEnergy(feats, compat=3)
    np.argmax(d.inference(10), axis=0).reshape(10, 10)


def test_call_dcrf_eq_dcrf2d():
    d = dcrf.DenseCRF(100, 2)
    d2 = dcrf.DenseCRF2D(10, 10, 2)
    unary, img = _get_simple_unary(), _get_simple_img()
    d.setUnaryEnergy(-np.log(unary))
    d2.setUnaryEnergy(-np.log(unary))
    feats = utils.create_pairwise_bilateral(sdims=(2, 2), schan=2, img=img, chdim=2)
    d.addPairwiseEnergy(feats, compat=3)
    d2.addPairwiseBilateral(sxy=2, srgb=2, rgbim=img, compat=3)
    res1 = np.argmax(d.inference(10), axis=0).reshape(10, 10)
    res2 = np.argmax(d2.inference(10), axis=0).reshape(10, 10)
    assert np.all(res1 == res2)


def test_compact_wrong_is_accepted_and_computed_correctly():
    """Upstream: a float64 compat vector raises ValueError. deepcrf (deliberately lenient)
    converts it and computes what the float32 vector gives."""
    results = []
    for compat in (np.array([1.0, 2.0]), np.array([1.0, 2.0], np.float32)):
        d = dcrf.DenseCRF2D(10, 10, 2)
        d.setUnaryEnergy(-np.log(_get_simple_unary()).astype(np.float32))
        d.addPairwiseBilateral(sxy=(3, 3), srgb=(3, 3, 3), rgbim=_get_simple_img(), compat=compat)
        results.append(np.array(d.inference(2)))
    np.testing.assert_array_equal(results[0], results[1])
    with pytest.raises(ValueError):  # a compatibility of the wrong size is still refused
        dcrf.DenseCRF2D(10, 10, 2).addPairwiseGaussian(sxy=3, compat=np.ones(3))


def test_issue29_wrong_unary_shape_throws_early():
    shape, nlabels = (69, 51, 72), 5
    probs = np.random.default_rng(0).standard_normal((nlabels, 68, 50)).astype(np.float32)
    probs /= probs.sum(axis=0, keepdims=True)
    d = dcrf.DenseCRF(np.prod(shape), nlabels)
    with pytest.raises(ValueError):
        d.setUnaryEnergy(utils.unary_from_softmax(probs))  # "THIS SHOULD THROW"


def test_issue29_3d_volume_with_full_kernel():
    shape, nlabels = (9, 7, 8), 5
    probs = np.random.default_rng(0).random((nlabels, *shape)).astype(np.float32)
    probs /= probs.sum(axis=0, keepdims=True)
    d = dcrf.DenseCRF(np.prod(shape), nlabels)
    d.setUnaryEnergy(utils.unary_from_softmax(probs))
    feats = utils.create_pairwise_gaussian(sdims=(1.0, 1.0, 1.0), shape=shape)
    d.addPairwiseEnergy(
        feats, compat=3, kernel=dcrf.FULL_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC
    )
    new_image = np.argmax(d.inference(5), axis=0).reshape(shape)
    assert new_image.shape == shape


def test_issue26_four_channel_bilateral_energy():
    """A 4-channel 'image' through create_pairwise_bilateral + addPairwiseEnergy: the square
    of ones (rows/cols 150..361) must come out as its own label, the rest as the other."""
    n = 512
    x, y = np.mgrid[0:n, 0:n]
    probs = np.exp(-((x - 256.0) ** 2 + (y - 256.0) ** 2) / (2 * 128.0 * 128.0))
    probs = (probs - probs.min()) / (probs.max() - probs.min())
    probs = 0.2 * (probs - 0.5) + 0.5
    probs = np.stack([probs, 1 - probs])
    d = dcrf.DenseCRF2D(n, n, 2)
    d.setUnaryEnergy(utils.unary_from_softmax(probs))
    unary_map = np.argmax(d.inference(10), axis=0).reshape(n, n)
    tmp_img = np.zeros((n, n, 4), np.uint8)
    tmp_img[150:362, 150:362, :] = 1
    energy = utils.create_pairwise_bilateral(sdims=(10, 10), schan=0.01, img=tmp_img, chdim=2)
    d.addPairwiseEnergy(energy, compat=10)
    map_soln = np.argmax(d.inference(100), axis=0).reshape(n, n)
    square = np.zeros((n, n), bool)
    square[150:362, 150:362] = True
    assert (unary_map[square] == 0).mean() > 0.99  # the Gaussian bump favours label 0 inside
    assert (map_soln == np.where(square, 0, 1)).mean() > 0.99
    with pytest.raises(ValueError):  # "This is wrong and will now raise a ValueError"
        d.addPairwiseBilateral(sxy=(10, 10), srgb=0.01, rgbim=tmp_img, compat=10)
