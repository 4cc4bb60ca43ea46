"""refine / refine_labels / unary_from_labels on bad or unusual inputs: the right result,
or an error naming the argument (issue 14, item 3)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from deepcrf import refine, refine_labels
from deepcrf.dense import unary_from_labels
from deepcrf.inputs import EXACT_MAX_POINTS

RNG = np.random.default_rng(0)
PROBS = RNG.random((3, 12, 16)).astype(np.float32)
PROBS /= PROBS.sum(0)
IMAGE = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)
FAST = {"iterations": 2, "bilateral_srgb": 13.0}


@pytest.mark.parametrize(
    ("probs", "image", "kwargs", "error", "names"),
    [
        (PROBS, IMAGE, {"iterations": 2.5}, TypeError, "iterations"),
        (PROBS, IMAGE, {"iterations": -1}, ValueError, "iterations"),
        (PROBS, IMAGE, {"iterations": True}, TypeError, "iterations"),
        (PROBS, IMAGE, {"bilateral_compat": float("nan")}, ValueError, "bilateral_compat"),
        (PROBS, IMAGE, {"gaussian_compat": np.inf}, ValueError, "gaussian_compat"),
        (PROBS, IMAGE, {"bilateral_compat": np.array([1.0, np.nan, 1.0])}, ValueError, "compat"),
        (PROBS, IMAGE, {"bilateral_srgb": 0.0}, ValueError, "bilateral_srgb"),
        (PROBS, IMAGE, {"gaussian_sxy": float("inf")}, ValueError, "gaussian_sxy"),
        (PROBS, IMAGE, {"clip": 0.0}, ValueError, "clip"),
        (PROBS * np.nan, IMAGE, {}, ValueError, "probs"),
        (PROBS.astype(np.float64) * 1e39, IMAGE, {"logits": True}, ValueError, "probs"),
        (PROBS[:, :0], IMAGE[:0], {}, ValueError, "zero-size"),
        (PROBS, IMAGE[:0], {}, ValueError, "image"),
        (PROBS.transpose(1, 2, 0).copy(), IMAGE, {}, ValueError, "probs"),
        (PROBS.astype(np.int64), IMAGE, {}, TypeError, "probs"),
        (PROBS.tolist(), IMAGE, {}, TypeError, "probs"),
        (PROBS, IMAGE.astype(np.float32) * np.nan, {}, ValueError, "image"),
        (PROBS, IMAGE, {"strict": "yes"}, TypeError, "strict"),
        (PROBS, IMAGE, {"tile": -3}, ValueError, "tile"),
        (PROBS, IMAGE, {"batched": "no"}, TypeError, "batched"),
    ],
)
def test_bad_inputs_name_the_argument(probs, image, kwargs, error, names):
    with pytest.raises(error, match=names):
        refine(probs, image, **{**FAST, **kwargs})


def test_torch_channels_last_blames_probs():
    probs = torch.from_numpy(PROBS).permute(1, 2, 0)[None]
    image = torch.from_numpy(IMAGE).permute(2, 0, 1)[None]
    with pytest.raises(ValueError, match=r"probs.*channels-last"):
        refine(probs, image, **FAST)


@pytest.mark.parametrize(
    ("image", "what"),
    [
        (IMAGE / 255.0, "0..1"),
        (IMAGE.astype(np.float32) - 120.0, "negative"),
        (IMAGE > 128, "bool"),
        (IMAGE.astype(np.int8), "negative"),
        (IMAGE.astype(np.uint16) * 257, "16-bit"),
    ],
)
def test_unlikely_pixel_units_warn_or_raise_with_strict(image, what):
    with pytest.warns(UserWarning, match=what):
        out = refine(PROBS, image, **FAST)
    assert out.shape == PROBS.shape and np.isfinite(out).all()
    with pytest.raises(ValueError, match="image"):
        refine(PROBS, image, strict=True, **FAST)


def test_raw_pixels_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refine(PROBS, IMAGE, **FAST)
        refine(PROBS, IMAGE.astype(np.float32), **FAST)


def test_numpy_scalar_compat_works_like_a_float():
    for zero in (np.float32(0), np.int64(0), torch.tensor(0.0), np.array(0.0)):
        np.testing.assert_allclose(
            refine(PROBS, IMAGE, gaussian_compat=zero, **FAST),
            refine(PROBS, IMAGE, gaussian_compat=0.0, **FAST),
        )
    np.testing.assert_allclose(
        refine(PROBS, IMAGE, bilateral_compat=np.float32(4), iterations=np.int64(2)),
        refine(PROBS, IMAGE, bilateral_compat=4.0, iterations=2),
    )


def test_requires_grad_inputs_are_detached():
    probs = torch.from_numpy(PROBS).requires_grad_()
    image = torch.from_numpy(IMAGE).permute(2, 0, 1).float().requires_grad_()
    out = refine(probs, image, **FAST)
    assert not out.requires_grad
    expected = refine(PROBS, IMAGE, **FAST)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_inputs_are_not_modified():
    probs, image = PROBS.copy(), IMAGE.copy()
    probs.flags.writeable = False
    refine(probs, image, **FAST)
    refine_labels(probs.argmax(0), image, 3, **FAST)
    np.testing.assert_array_equal(probs, PROBS)
    np.testing.assert_array_equal(image, IMAGE)


def test_numpy_batch_rule_is_explicit():
    labels = np.stack([PROBS.argmax(0), PROBS.argmax(0)[::-1]])
    images = np.stack([IMAGE, IMAGE[::-1]])
    with pytest.raises(ValueError, match="batched"):
        refine_labels(labels, images, 3, **FAST)
    batch = refine_labels(labels, images, 3, batched=True, **FAST)
    for i in range(2):
        np.testing.assert_allclose(batch[i], refine_labels(labels[i], images[i], 3, **FAST))
    volume = refine_labels(labels, images, 3, batched=False, **FAST)
    assert volume.shape == (3, 2, 12, 16)
    probs = np.stack([PROBS, PROBS[:, ::-1]])
    batch = refine(probs, images, batched=True, **FAST)
    np.testing.assert_allclose(batch[1], refine(probs[1], images[1], **FAST))
    # the torch rule is the same: (B, L, H, W) is a batch
    torch_batch = refine(
        torch.from_numpy(probs.copy()), torch.from_numpy(images.copy()).permute(0, 3, 1, 2), **FAST
    )
    np.testing.assert_allclose(torch_batch.numpy(), batch, atol=1e-5)
    with pytest.raises(ValueError, match="batched"):
        refine(torch.from_numpy(PROBS), torch.from_numpy(IMAGE).permute(2, 0, 1), batched=True)


def test_labels_must_be_integers():
    labels = PROBS.argmax(0)
    with pytest.raises(ValueError, match="labels"):
        refine_labels(labels + 0.5, IMAGE, 3, **FAST)
    whole = refine_labels(labels.astype(np.float32), IMAGE, 3, **FAST)
    np.testing.assert_allclose(whole, refine_labels(labels, IMAGE, 3, **FAST))
    with pytest.raises(TypeError, match="num_labels"):
        refine_labels(labels, IMAGE, 3.0, **FAST)
    with pytest.raises(ValueError, match="labels"):
        refine_labels(labels[:0], IMAGE[:0], 3, **FAST)


@pytest.mark.parametrize("bad", [-1, -200, 3])
def test_unary_from_labels_rejects_out_of_range_labels(bad):
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=str(bad)):
        unary_from_labels(labels, 3)
    with pytest.raises(ValueError, match="labels"):
        unary_from_labels(labels.astype(np.float64) + 0.25, 3)


def test_unary_from_labels_keeps_ignore_index():
    labels = np.array([[0, 255], [1, 2]])
    logits = unary_from_labels(labels, 3, ignore_index=255)
    assert torch.allclose(logits[:, 0, 1], torch.full((3,), float(np.log(1 / 3))))


def test_more_than_255_labels_refine():
    probs = RNG.random((300, 6, 7)).astype(np.float32)
    probs /= probs.sum(0)
    probs[280] += 10
    probs /= probs.sum(0)
    out = refine(probs, IMAGE[:6, :7], **FAST)
    assert (out.argmax(0) == 280).all()


def test_exact_filter_needs_force_on_large_inputs():
    side = int(EXACT_MAX_POINTS**0.5) + 2
    probs = np.full((2, side, side), 0.5, np.float32)
    with pytest.raises(ValueError, match="force"):
        refine(probs, None, bilateral_compat=0, filter="exact", iterations=1)
    small = refine(PROBS, IMAGE, filter="exact", **FAST)
    assert np.isfinite(small).all()


def test_big_endian_and_fortran_arrays():
    expected = refine(PROBS, IMAGE, **FAST)
    np.testing.assert_allclose(refine(PROBS.astype(">f4"), IMAGE, **FAST), expected)
    np.testing.assert_allclose(
        refine(np.asfortranarray(PROBS), IMAGE.copy(order="F"), **FAST), expected
    )
    labels = PROBS.argmax(0)
    np.testing.assert_allclose(
        refine_labels(labels.astype(">i8"), IMAGE, 3, **FAST),
        refine_labels(labels, IMAGE, 3, **FAST),
    )


def test_label_counts_beyond_memory_are_an_error():
    with pytest.raises(ValueError, match="num_labels"):
        refine_labels(np.zeros((4, 4), int), None, 10**7, bilateral_compat=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bilateral_srgb": 1e-9}, "bilateral_sxy / bilateral_srgb"),
        ({"bilateral_sxy": 1e-12}, "bilateral_sxy / bilateral_srgb"),
        ({"gaussian_sxy": 1e-15}, "gaussian_sxy"),
    ],
)
def test_bandwidths_too_small_for_the_lattice_name_the_argument(kwargs, name):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    probs = rng.random((3, 20, 24)).astype(np.float32)
    probs /= probs.sum(0)
    with pytest.raises(ValueError, match=f"^{name}: bandwidths"):
        refine(probs, image, **kwargs)
    features = rng.random((20, 24, 2)) * 1e12
    with pytest.raises(ValueError, match=r"^extra_kernels\[0\]: the features"):
        refine(probs, image, extra_kernels=[(features, 3)])
