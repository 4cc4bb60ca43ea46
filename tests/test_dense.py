"""refine(): numpy and torch layouts, kernels on N-D data, label input, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf import refine, refine_labels
from deepcrf.crf import Kernel, Pairwise, mean_field
from deepcrf.features import bilateral_features, grid_features
from deepcrf.params import CRFParams


def noisy_scene(h=40, w=50, num_labels=3, seed=0):
    """An image of coloured blocks and noisy probabilities that roughly follow them."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 3 :] = 1
    labels[h // 2 :, 2 * w // 3 :] = 2
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    image = np.clip(colours[labels] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = np.eye(num_labels)[labels].transpose(2, 0, 1) * 1.0 + rng.normal(
        0, 1.0, (num_labels, h, w)
    )
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return probs.astype(np.float32), image, labels


def test_refine_numpy_equals_core_loop():
    """refine()'s defaults are CRFParams() (DeepLab-LargeFOV's values)."""
    probs, image, _ = noisy_scene()
    out = refine(probs, image, iterations=5)
    h, w = image.shape[:2]
    p = CRFParams()
    kernels = [
        Kernel(grid_features((h, w), p.gaussian_sxy), p.gaussian_compat),
        Kernel(
            bilateral_features(torch.from_numpy(image), p.bilateral_sxy, p.bilateral_srgb),
            p.bilateral_compat,
        ),
    ]
    unary = torch.log(torch.from_numpy(probs).clamp(min=1e-5)).reshape(3, -1).t()
    expected = mean_field(unary, Pairwise(kernels, 3), 5).t().reshape(3, h, w)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-6)


def test_refine_improves_noisy_labels():
    probs, image, labels = noisy_scene()
    before = (probs.argmax(0) == labels).mean()
    after = (refine(probs, image).argmax(0) == labels).mean()
    assert before < 0.95 and after > 0.99


def test_torch_batched_matches_numpy_per_image():
    scenes = [noisy_scene(seed=s) for s in (1, 2)]
    probs = torch.stack([torch.from_numpy(p) for p, _, _ in scenes])
    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for _, im, _ in scenes])
    out = refine(probs, images, iterations=4)
    assert isinstance(out, torch.Tensor) and out.shape == probs.shape
    for i, (p, im, _) in enumerate(scenes):
        np.testing.assert_allclose(out[i].numpy(), refine(p, im, iterations=4), atol=1e-5)
    single = refine(probs[0], images[0].float(), iterations=4)  # unbatched, float image
    assert torch.allclose(single, out[0], atol=1e-5)


def test_volume_with_spacing_and_extra_kernel():
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 12, 12), np.int64)
    labels[:, :, 6:] = 1
    volume = (labels[..., None] * 100 + rng.normal(0, 5, (6, 12, 12, 1))).astype(np.float32)
    logits = np.eye(2)[labels].transpose(3, 0, 1, 2) + rng.normal(0, 0.8, (2, 6, 12, 12))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    depth = np.broadcast_to(np.arange(12, dtype=np.float32)[None, None, :, None], (6, 12, 12, 1))
    out = refine(
        probs,
        volume,
        spacing=(3.0, 1.0, 1.0),
        bilateral_sxy=5,
        bilateral_srgb=20,
        extra_kernels=[(depth / 2.0, 1.0)],
    )
    assert out.shape == probs.shape
    assert (out.argmax(0) == labels).mean() > (probs.argmax(0) == labels).mean()


def test_refine_labels_from_label_map():
    probs, image, labels = noisy_scene()
    noisy = probs.argmax(0)
    noisy[0, 0] = 255
    out = refine_labels(noisy, image, 3, gt_prob=0.6, ignore_index=255)
    assert out.shape == (3, *labels.shape)
    assert (out.argmax(0) == labels).mean() > (noisy == labels).mean()
    out_t = refine_labels(
        torch.from_numpy(noisy)[None],
        torch.from_numpy(image).permute(2, 0, 1)[None],
        3,
        gt_prob=0.6,
        ignore_index=255,
    )
    np.testing.assert_allclose(out_t[0].numpy(), out, atol=1e-5)


def test_edge_cases_give_valid_output():
    probs, image, _ = noisy_scene(h=1, w=1)
    assert np.allclose(refine(probs, image).sum(0), 1.0)
    one = np.ones((1, 5, 5), np.float32)
    assert np.array_equal(refine(one, np.zeros((5, 5, 3), np.uint8)), one)
    zeros = np.zeros((3, 5, 5), np.float32)
    zeros[0] = 1.0  # zero probabilities are clipped, not log(0)
    assert np.isfinite(refine(zeros, np.zeros((5, 5, 3), np.uint8))).all()
    huge = np.random.default_rng(0).normal(0, 1e4, (3, 8, 8)).astype(np.float32)
    assert np.isfinite(refine(huge, np.zeros((8, 8, 3), np.uint8), logits=True)).all()
    readonly = probs.copy()
    readonly.setflags(write=False)
    refine(readonly, image)
    refine(np.asfortranarray(noisy_scene()[0]), noisy_scene()[1])  # non-contiguous
    spatial_only = refine(noisy_scene()[0], None, bilateral_compat=0)
    assert spatial_only.shape == (3, 40, 50)
    no_kernels = refine(probs, None, gaussian_compat=0, bilateral_compat=0)
    np.testing.assert_allclose(no_kernels, probs, atol=1e-6)


@pytest.mark.parametrize(
    "probs, image, kwargs, error, match",
    [
        (
            np.full((3, 4, 4), 1 / 3, np.float32),
            np.zeros((5, 4, 3), np.uint8),
            {},
            ValueError,
            "image",
        ),
        (
            np.full((3, 4, 4), 0.5, np.float32),
            np.zeros((4, 4, 3), np.uint8),
            {},
            ValueError,
            "sum to 1",
        ),
        (
            np.full((3, 4, 4), np.nan, np.float32),
            np.zeros((4, 4, 3), np.uint8),
            {},
            ValueError,
            "NaN",
        ),
        (np.ones((3, 4, 4), np.int64), np.zeros((4, 4, 3), np.uint8), {}, TypeError, "floating"),
        (np.full((3, 4, 4), 1 / 3, np.float32), None, {}, ValueError, "image"),
        (
            np.full((3, 4, 4), 1 / 3, np.float32),
            np.zeros((4, 4, 3), np.uint8),
            {"gaussian_sxy": -1},
            ValueError,
            "sxy",
        ),
        (
            np.full((3, 4, 4), 1 / 3, np.float32),
            np.zeros((4, 4, 3), np.uint8),
            {"iterations": -1},
            ValueError,
            "iterations",
        ),
        (torch.full((1, 3, 4, 4), 1 / 3), torch.zeros(1, 3, 4, 5), {}, ValueError, "image"),
        ([[0.5]], None, {}, TypeError, "probs"),
    ],
)
def test_bad_input_names_the_argument(probs, image, kwargs, error, match):
    with pytest.raises(error, match=match):
        refine(probs, image, **kwargs)


def test_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        refine_labels(np.full((4, 4), 7), np.zeros((4, 4, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="gt_prob"):
        refine_labels(np.zeros((4, 4), np.int64), np.zeros((4, 4, 3), np.uint8), 3, gt_prob=1.0)


def test_unary_from_probs_in_place_equals_the_copy():
    from deepcrf.dense import unary_from_probs

    probs = torch.rand(5, 4) * 1.2 - 0.1  # also below the clip and above 1
    expected = unary_from_probs(probs)
    work = probs.clone()
    out = unary_from_probs(work, inplace=True)
    assert out.data_ptr() == work.data_ptr() and torch.equal(out, expected)
    double = probs.double()
    assert torch.equal(unary_from_probs(double, inplace=True), expected)  # converted instead
    assert double.dtype == torch.float64 and torch.equal(double, probs.double())
