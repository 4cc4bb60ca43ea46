"""Property-based tests (hypothesis) over shapes, dtypes and value ranges: refine and the
pydensecrf shim return finite distributions of the right shape, or raise an error naming
the argument; never NaN, never a crash from deep inside (issue 14, item 7)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepcrf import refine, refine_labels
from deepcrf.compat.pydensecrf import densecrf as dcrf
from deepcrf.compat.pydensecrf.utils import unary_from_softmax

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ARGUMENTS = ("probs", "image", "iterations", "compat", "sxy", "srgb", "labels", "bandwidths")

shapes = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))
float_dtypes = st.sampled_from([np.float16, np.float32, np.float64])
image_dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.uint16, np.int16, bool])


def _assert_distribution(q, shape) -> None:
    q = q.numpy() if isinstance(q, torch.Tensor) else q
    assert q.shape == shape
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-3)


@SETTINGS
@given(
    shape=shapes,
    dtype=float_dtypes,
    image_dtype=image_dtypes,
    logits=st.booleans(),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 30.0, 1e4, 1e30]),
    iterations=st.integers(0, 3),
    sxy=st.floats(0.05, 200.0),
    srgb=st.floats(1e-3, 100.0),
    compat=st.floats(-20.0, 20.0),
    as_torch=st.booleans(),
    data=st.data(),
)
def test_refine_gives_a_distribution_or_names_the_argument(
    shape, dtype, image_dtype, logits, scale, iterations, sxy, srgb, compat, as_torch, data
):
    raw = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    with np.errstate(over="ignore"):  # float16 overflow to inf: refine must reject it
        probs = (raw * scale if logits else (raw + 1e-3) / (raw + 1e-3).sum(0)).astype(dtype)
    pixels = data.draw(hnp.arrays(np.float64, (*shape[1:], 3), elements=st.floats(0, 255)))
    image = pixels.astype(image_dtype) if image_dtype is not bool else pixels > 128
    kwargs = {
        "iterations": iterations,
        "bilateral_sxy": sxy,
        "bilateral_srgb": srgb,
        "bilateral_compat": compat,
        "logits": logits,
    }
    if as_torch:
        probs_in, image_in = torch.from_numpy(probs), torch.from_numpy(np.asarray(image))
        image_in = image_in.permute(2, 0, 1)
    else:
        probs_in, image_in = probs, image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            q = refine(probs_in, image_in, **kwargs)
        except (ValueError, TypeError) as exc:
            assert any(name in str(exc) for name in ARGUMENTS), str(exc)
            return
    _assert_distribution(q, shape)


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    num_labels=st.integers(2, 6),
    gt_prob=st.floats(0.05, 0.95),
    label_dtype=st.sampled_from([np.uint8, np.int32, np.int64, np.float32]),
    data=st.data(),
)
def test_refine_labels_on_any_label_map(shape, num_labels, gt_prob, label_dtype, data):
    labels = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, num_labels - 1)))
    image = data.draw(hnp.arrays(np.uint8, (*shape, 3)))
    q = refine_labels(labels.astype(label_dtype), image, num_labels, gt_prob=gt_prob, iterations=2)
    _assert_distribution(q, (num_labels, *shape))


@SETTINGS
@given(
    w=st.integers(1, 9),
    h=st.integers(1, 9),
    labels=st.integers(2, 5),
    sxy=st.floats(0.01, 100.0),
    srgb=st.floats(1e-4, 50.0),
    data=st.data(),
)
def test_shim_tiny_bandwidths_and_sizes(w, h, labels, sxy, srgb, data):
    """pydensecrf #98 segfaulted on tiny srgb; the shim returns a distribution (or, for
    features beyond what the lattice can index, an error that blames the bandwidths)."""
    probs = data.draw(hnp.arrays(np.float32, (labels, h, w), elements=st.floats(0.01, 1.0)))
    probs /= probs.sum(0)
    image = data.draw(hnp.arrays(np.uint8, (h, w, 3)))
    crf = dcrf.DenseCRF2D(w, h, labels)
    crf.setUnaryEnergy(unary_from_softmax(probs))
    crf.addPairwiseGaussian(sxy=sxy, compat=3)
    crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=image, compat=10)
    try:
        q = np.array(crf.inference(3)).reshape(labels, h, w)
    except ValueError as exc:  # colour range / srgb beyond what the lattice can index
        assert "bandwidths" in str(exc)
        return
    _assert_distribution(q, (labels, h, w))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_extreme_logits_within_float32_stay_finite(dtype):
    finfo = np.finfo(dtype)
    probs = np.zeros((3, 5, 6), dtype)
    probs[0] = finfo.max / 4 if dtype != np.float64 else 1e37
    probs[1] = -(finfo.max / 4 if dtype != np.float64 else 1e37)
    q = refine(probs, np.zeros((5, 6, 3), np.uint8), logits=True, iterations=3)
    _assert_distribution(q, probs.shape)
    assert (q.argmax(0) == 0).all()
