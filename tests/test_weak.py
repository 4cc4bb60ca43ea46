"""Pseudo-labels against straightforward reference implementations of IRN's and PSA's
procedures (numpy + pydensecrf, written here as the papers' code does it), and mask
refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.dense import refine, refine_labels
from deepcrf.params import CRFParams
from deepcrf.weak import PRESETS, _max_first, pseudo_labels, refine_mask

H, W = 36, 44


def _scene(seed: int = 0):
    """An image with two coloured objects on a textured background, and noisy CAMs."""
    rng = np.random.default_rng(seed)
    image = (rng.random((H, W, 3)) * 40 + 90).astype(np.uint8)
    image[6:22, 5:20] = (200, 40, 40)
    image[14:32, 24:40] = (30, 60, 210)
    image[26:34, 3:14] = (40, 190, 60)  # weakly activated: undecided between the runs
    yy, xx = np.mgrid[0:H, 0:W]
    blobs = [((14, 12), 5.0), ((23, 32), 6.0)]
    cams = np.stack(
        [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2)) for (cy, cx), s in blobs]
    )
    cams[0, 26:34, 3:14] += 0.15
    cams = np.clip(cams + rng.normal(0, 0.02, cams.shape), 0, 1).astype(np.float32)
    return image, cams, np.array([6, 14])


# ------------------------------------------------------------------ reference procedures
def _crf_inference_label(img, labels, n_labels, t=10, gt_prob=0.7):
    """IRN's imutils.crf_inference_label."""
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_labels

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, h, w)), axis=0)


def _irn_reference(img, cams, keys, fg=0.30, bg=0.05):
    """IRN's cam_to_ir_label._work for one image."""
    keys = np.pad(keys + 1, (1, 0), mode="constant")
    fg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=fg), axis=0)
    fg_conf = keys[_crf_inference_label(img, fg_conf_cam, keys.shape[0])]
    bg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=bg), axis=0)
    bg_conf = keys[_crf_inference_label(img, bg_conf_cam, keys.shape[0])]
    conf = fg_conf.copy()
    conf[fg_conf == 0] = 255
    conf[bg_conf + fg_conf == 0] = 0
    return conf.astype(np.uint8)


def _psa_crf_with_alpha(img, cams, alpha, t=10):
    """PSA's infer_cls._crf_with_alpha + imutils.crf_inference (probabilities per channel)."""
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    from pydensecrf.utils import unary_from_softmax

    bg_score = np.power(1 - np.max(cams, axis=0, keepdims=True), alpha)
    probs = np.concatenate((bg_score, cams), axis=0)
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, probs.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(d.inference(t)).reshape((probs.shape[0], h, w))


def _psa_reference(img, cams, keys):
    """PSA's la/ha CRF (alpha 4, 32) and VOC12AffDataset's combination, with class ids."""
    lut = np.pad(keys + 1, (1, 0))
    label_la = np.argmax(_psa_crf_with_alpha(img, cams, 4), axis=0)
    label_ha = np.argmax(_psa_crf_with_alpha(img, cams, 32), axis=0)
    label = lut[label_la].astype(np.uint8)
    label[label_la == 0] = 255
    label[label_ha == 0] = 0
    return label


# ------------------------------------------------------------------ against the references
def test_irn_preset_reproduces_irns_procedure():
    image, cams, keys = _scene()
    ours = pseudo_labels(cams, image, keys, **PRESETS["irn"])
    ref = _irn_reference(image, cams, keys)
    assert ours.dtype == np.uint8 and ours.shape == (H, W)
    assert set(np.unique(ref)) >= {0, 7, 255}  # the test exercises every outcome
    assert (ours == ref).mean() >= 0.999


def test_psa_preset_reproduces_psas_procedure():
    image, cams, keys = _scene(1)
    ours = pseudo_labels(cams, image, keys, **PRESETS["psa"])
    ref = _psa_reference(image, cams, keys)
    assert set(np.unique(ref)) >= {0, 255}
    assert (ours == ref).mean() >= 0.999


def test_without_crf_the_rules_match_numpy_exactly():
    image, cams, keys = _scene(2)
    lut = np.pad(keys + 1, (1, 0))
    fg = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.3), axis=0)
    bg = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), constant_values=0.05), axis=0)
    expected = lut[fg].astype(np.uint8)
    expected[fg == 0] = 255
    expected[(fg == 0) & (bg == 0)] = 0
    options = {**PRESETS["irn"], "iterations": 0}
    np.testing.assert_array_equal(pseudo_labels(cams, image, keys, **options), expected)
    # PSA's rule: background wherever the weak-background run says so
    expected_psa = lut[fg].astype(np.uint8)
    expected_psa[fg == 0] = 255
    expected_psa[bg == 0] = 0
    options["bg_rule"] = "bg_run"
    np.testing.assert_array_equal(pseudo_labels(cams, image, keys, **options), expected_psa)


def test_dual_run_side_by_side_equals_two_separate_crf_runs():
    image, cams, keys = _scene(3)
    _, probs = pseudo_labels(cams, image, keys, return_probs=True, **PRESETS["irn"])
    assert probs.shape == (2, 3, H, W)
    crf = {k: v for k, v in PRESETS["irn"].items() if k.startswith(("gauss", "bilat", "iter"))}
    for run, threshold in enumerate((0.30, 0.05)):
        scores = np.concatenate([np.full((1, H, W), threshold, np.float32), cams])
        separate = refine_labels(scores.argmax(0), image, 3, gt_prob=0.7, **crf)
        np.testing.assert_allclose(probs[run], separate, atol=2e-5)


def test_single_run_confidence_marks_uncertain_pixels_void():
    image, cams, keys = _scene(4)
    labels, probs = pseudo_labels(cams, image, keys, return_probs=True, **PRESETS["clip_es"])
    assert probs.shape == (3, H, W)
    sure = probs.max(0) >= 0.95
    lut = np.pad(keys + 1, (1, 0))
    np.testing.assert_array_equal(labels[sure], lut[probs.argmax(0)][sure])
    assert (labels[~sure] == 255).all() and (~sure).any() and sure.any()
    # against refine() on the same scores: softmax unaries clip at 1e-5
    scores = np.concatenate([(1 - cams.max(0, keepdims=True)) ** 1.0, cams])
    crf = {k: v for k, v in PRESETS["clip_es"].items() if k.startswith(("gauss", "bilat", "iter"))}
    direct = refine(np.log(np.maximum(scores, 1e-5)), image, logits=True, **crf)
    np.testing.assert_allclose(probs, direct, atol=2e-5)


def test_toco_preset_runs_dual_constant_thresholds():
    image, cams, keys = _scene(5)
    labels = pseudo_labels(cams, image, keys, **PRESETS["toco"])
    assert set(np.unique(labels)) <= {0, 7, 15, 255}


def test_batched_torch_equals_per_image_numpy():
    scenes = [_scene(s) for s in (6, 7)]
    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _, _ in scenes])
    cams = torch.stack([torch.from_numpy(c) for _, c, _ in scenes])
    keys = torch.stack([torch.from_numpy(k) for _, _, k in scenes])
    batch = pseudo_labels(cams, images, keys, **PRESETS["irn"])
    assert batch.shape == (2, H, W) and batch.dtype == torch.uint8
    for i, (im, c, k) in enumerate(scenes):
        single = pseudo_labels(c, im, k, **PRESETS["irn"])
        assert (batch[i].numpy() == single).mean() >= 0.999


def test_empty_keys_give_all_background():
    image, _, _ = _scene()
    labels = pseudo_labels(np.zeros((0, H, W), np.float32), image, [], **PRESETS["irn"])
    assert labels.shape == (H, W) and (labels == 0).all()


def test_default_keys_are_channel_indices():
    image, cams, _ = _scene()
    a = pseudo_labels(cams, image, None, threshold=0.3, background="constant", iterations=0)
    b = pseudo_labels(cams, image, [0, 1], threshold=0.3, background="constant", iterations=0)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0, 1, 2}


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c, i, k: (c[:, :-2], i, k), "cams: spatial size"),
        (lambda c, i, k: (c, i, np.array([3, -1])), "keys: foreground class indices"),
        (lambda c, i, k: (c, i, np.array([3, 254])), "keys: foreground class indices"),
        (lambda c, i, k: (c, i, np.array([3])), "keys: expected one class index"),
        (lambda c, i, k: (c, i, np.array([3, 3])), "keys: duplicate"),
        (lambda c, i, k: (c, i, np.array([0.5, 1.0])), "keys: expected integer"),
        (lambda c, i, k: (c * 2, i, k), r"cams: values must lie in \[0, 1\]"),
        (lambda c, i, k: (c - 0.5, i, k), r"cams: values must lie in \[0, 1\]"),
        (lambda c, i, k: (np.where(c > 0.5, np.nan, c), i, k), "cams: contains NaN"),
    ],
)
def test_bad_inputs_name_the_argument(change, match):
    cams, image, keys = change(*(_scene()[1], _scene()[0], _scene()[2]))
    with pytest.raises((ValueError, TypeError), match=match):
        pseudo_labels(cams, image, keys, **PRESETS["irn"])


def test_bad_options_name_the_argument():
    image, cams, keys = _scene()
    with pytest.raises(ValueError, match=r"keys: .*num_classes"):
        pseudo_labels(cams, image, keys, num_classes=10, threshold=0.3, background="constant")
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(cams, image, keys, background="constant")
    with pytest.raises(ValueError, match="fg_threshold/bg_threshold"):
        pseudo_labels(cams, image, keys, background="constant", fg_threshold=0.3)
    with pytest.raises(ValueError, match="confidence"):
        pseudo_labels(cams, image, keys, alpha=(4, 32), confidence=0.9)
    with pytest.raises(ValueError, match="alpha"):
        pseudo_labels(cams, image, keys, alpha=0)
    with pytest.raises(ValueError, match="unary"):
        pseudo_labels(cams, image, keys, unary="logits")
    with pytest.raises(ValueError, match="background"):
        pseudo_labels(cams, image, keys, background="mean")
    with pytest.raises(ValueError, match="unknown parameter"):
        pseudo_labels(cams, image, keys, bilateral_sigma=3)


# ------------------------------------------------------------------ refine_mask
def test_refine_mask_is_the_two_label_crf():
    image, _, _ = _scene()
    p = np.full((H, W), 0.4, np.float32)
    p[4:20, 3:18] = 0.6  # a soft mask, slightly off the red object (6:22, 5:20)
    out = refine_mask(image, p, iterations=5)
    params = CRFParams(iterations=5).to_dict()  # refine_mask's defaults are CRFParams'
    expected = refine(np.stack([1 - p, p]), image, **params)[1]
    assert out.shape == (H, W)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # it snaps the mask to the red object
    assert (out[6:22, 5:20] > 0.9).all() and (out[:4] < 0.1).all()


def test_refine_mask_batched_torch():
    image, cams, _ = _scene()
    img = torch.from_numpy(image).permute(2, 0, 1)
    batch = refine_mask(torch.stack([img, img]), torch.from_numpy(cams), iterations=3)
    assert batch.shape == (2, H, W)
    single = refine_mask(image, cams[1], iterations=3)
    np.testing.assert_allclose(batch[1].numpy(), single, atol=1e-5)


def test_refine_mask_bad_probability():
    image, cams, _ = _scene()
    with pytest.raises(ValueError, match=r"probability: values must lie in \[0, 1\]"):
        refine_mask(image, cams[0] + 0.5)
    with pytest.raises(ValueError, match="probability: expected"):
        refine_mask(image, cams)


# ------------------------------------------------------------------ internals
@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_max_first_equals_numpy_max_and_argmax_with_ties(dim):
    rng = np.random.default_rng(dim)
    x = rng.integers(0, 3, size=(3, 4, 5, 2)).astype(np.float32)  # many ties
    values, index = _max_first(torch.from_numpy(x), dim)
    np.testing.assert_array_equal(values.numpy(), x.max(dim))
    np.testing.assert_array_equal(index.numpy(), x.argmax(dim))


def test_max_first_long_axis_falls_back_to_torch():
    x = torch.zeros(300, 4)
    x[7:9, 1] = 1.0
    values, index = _max_first(x, 0)
    assert index.tolist() == [0, 7, 0, 0] and values.tolist() == [0.0, 1.0, 0.0, 0.0]
