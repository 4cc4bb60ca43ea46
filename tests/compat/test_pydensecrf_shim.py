"""deepcrf.compat.pydensecrf: same calls, same results as pydensecrf (when installed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import deepcrf.compat.pydensecrf.densecrf as ours
from deepcrf.compat.pydensecrf import utils as our_utils


def photo_problem(path, label_path, num_labels=21, seed=0):
    """Coarse, noisy probabilities derived from a ground-truth map (a stand-in CNN)."""
    image = np.array(Image.open(path).convert("RGB"))
    labels = np.array(Image.open(label_path)).astype(np.int64)
    labels[labels >= num_labels] = 0
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    coarse = labels[::8, ::8]
    up = np.kron(coarse, np.ones((8, 8), np.int64))[:h, :w]
    logits = rng.normal(0, 0.6, (num_labels, h, w)).astype(np.float32)
    logits[up, np.arange(h)[:, None], np.arange(w)[None]] += 2.5
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    return image, probs


def run_crf(module, image, unary, iterations=10, **kinds):
    h, w = image.shape[:2]
    d = module.DenseCRF2D(w, h, unary.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    d.addPairwiseGaussian(sxy=3, compat=kinds.get("gauss_compat", 3))
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=kinds.get("bil_compat", 10))
    return np.array(d.inference(iterations))


def test_voc_photos_match_pydensecrf(voc_samples):
    ref_module = pytest.importorskip("pydensecrf.densecrf")
    for photo, label_path in voc_samples:
        image, probs = photo_problem(photo, label_path)
        unary = our_utils.unary_from_softmax(probs)
        q_ref = run_crf(ref_module, image, unary)
        q = run_crf(ours, image, unary)
        assert q.shape == q_ref.shape and q.dtype == np.float32
        agreement = (q.argmax(0) == q_ref.argmax(0)).mean()
        assert agreement >= 0.999, (photo.name, agreement)
        assert np.abs(q - q_ref).max() <= 1e-3, photo.name


def random_image(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:, w // 2 :] //= 3  # some structure on top of the noise
    return image


@pytest.mark.parametrize(
    "gauss_compat, bil_compat",
    [
        (3, 10),
        (np.linspace(1, 3, 5).astype(np.float32), 5),
        (2, np.random.default_rng(0).normal(size=(5, 5)).astype(np.float32)),  # symmetrised
    ],
)
def test_compatibility_kinds_match(gauss_compat, bil_compat):
    ref_module = pytest.importorskip("pydensecrf.densecrf")
    image = random_image()
    probs = np.random.default_rng(1).dirichlet(np.ones(5), size=image.shape[:2]).transpose(2, 0, 1)
    unary = our_utils.unary_from_softmax(probs)
    kinds = {"gauss_compat": gauss_compat, "bil_compat": bil_compat}
    np.testing.assert_allclose(
        run_crf(ours, image, unary, 5, **kinds),
        run_crf(ref_module, image, unary, 5, **kinds),
        atol=1e-4,
    )


@pytest.mark.parametrize("normalization", [0, 1, 2, 3])
def test_generic_energy_normalisations_and_stepping(normalization):
    ref_module = pytest.importorskip("pydensecrf.densecrf")
    ref_utils = pytest.importorskip("pydensecrf.utils")
    image = random_image(20, 24, seed=3)
    rng = np.random.default_rng(2)
    unary = our_utils.unary_from_softmax(
        rng.dirichlet(np.ones(4), size=(20, 24)).transpose(2, 0, 1)
    )
    feats = ref_utils.create_pairwise_bilateral((10, 10), (20, 20, 20), image, chdim=2)
    results = []
    for module in (ours, ref_module):
        d = module.DenseCRF(20 * 24, 4)
        d.setUnaryEnergy(np.ascontiguousarray(unary))
        d.addPairwiseEnergy(feats, compat=4, kernel=module.DIAG_KERNEL, normalization=normalization)
        q, tmp1, tmp2 = d.startInference()
        for _ in range(3):
            d.stepInference(q, tmp1, tmp2)
        results.append((np.array(q), d.klDivergence(q)))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-4)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-3)


def test_utils_match_pydensecrf():
    ref_utils = pytest.importorskip("pydensecrf.utils")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(6, 7)).transpose(2, 0, 1)
    for scale in (None, 0.8):
        np.testing.assert_array_equal(
            our_utils.unary_from_softmax(probs, scale=scale),
            ref_utils.unary_from_softmax(probs, scale=scale),
        )
    labels = rng.integers(0, 4, (6, 7))
    for zero_unsure in (True, False):
        np.testing.assert_array_equal(
            our_utils.unary_from_labels(labels, 4, 0.7, zero_unsure),
            ref_utils.unary_from_labels(labels, 4, 0.7, zero_unsure),
        )
    np.testing.assert_array_equal(
        our_utils.create_pairwise_gaussian((2, 3), (6, 7)),
        ref_utils.create_pairwise_gaussian((2, 3), (6, 7)),
    )
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        our_utils.create_pairwise_bilateral((2, 3), (10, 20, 30), image, chdim=2),
        ref_utils.create_pairwise_bilateral((2, 3), (10, 20, 30), image, chdim=2),
    )


def test_shim_without_reference_refines_and_steps():
    image = random_image(30, 40)
    probs = np.full((3, 30, 40), 0.2, np.float32)
    probs[0, :, :20] = probs[1, :, 20:] = 0.6
    unary = our_utils.unary_from_softmax(probs)
    q = run_crf(ours, image, unary, 5)
    assert q.shape == (3, 1200) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    d = ours.DenseCRF2D(40, 30, 3)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    q0, t1, t2 = d.startInference()
    for _ in range(5):
        d.stepInference(q0, t1, t2)
    np.testing.assert_allclose(q0, q, atol=1e-6)


def test_accepts_what_pydensecrf_accepts_and_more():
    image = random_image(10, 12)
    unary = np.asfortranarray(np.random.default_rng(0).random((3, 120)))  # float64, F-order
    unary.setflags(write=False)
    d = ours.DenseCRF2D(12, 10, 3)
    d.setUnaryEnergy(unary)
    d.addPairwiseBilateral(sxy=(5, 6), srgb=(10, 11, 12), rgbim=image[:, :, :], compat=3)
    assert np.isfinite(d.inference(2)).all()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda d: d.setUnaryEnergy(np.zeros((2, 120), np.float32)), ValueError, "unary"),
        (
            lambda d: d.addPairwiseBilateral(3, 3, np.zeros((10, 11, 3), np.uint8), 3),
            ValueError,
            "bilateral",
        ),
        (
            lambda d: d.addPairwiseBilateral(3, 3, np.zeros((10, 12, 4), np.uint8), 3),
            ValueError,
            "RGB",
        ),
        (lambda d: d.addPairwiseBilateral(3, 3, np.zeros((10, 12, 3)), 3), TypeError, "uint8"),
        (lambda d: d.addPairwiseEnergy(np.zeros((2, 7), np.float32), 3), ValueError, "pairwise"),
        (lambda d: d.addPairwiseGaussian(3, np.zeros((2, 2, 2))), ValueError, "dimension"),
        (lambda d: d.addPairwiseGaussian(3, 3, normalization=9), ValueError, "normalization"),
        (
            lambda d: d.setUnaryEnergy(
                np.zeros((3, 120), np.float32), np.zeros((2, 120), np.float32)
            ),
            ValueError,
            "logistic unary features f",
        ),
    ],
)
def test_bad_input_is_reported(call, error, match):
    with pytest.raises(error, match=match):
        call(ours.DenseCRF2D(12, 10, 3))
