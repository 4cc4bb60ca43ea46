"""DenseCRFLoss against a brute-force O(N^2) float64 computation of rloss's definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepcrf.features import bilateral_features
from deepcrf.lattice import build_lattice
from deepcrf.nn import DenseCRFLoss


def _inputs(b=2, k=3, h=9, w=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g) * 255
    images[:, :, :, : w // 2] = torch.tensor([200.0, 30.0, 40.0])[:, None, None]
    logits = torch.randn(b, k, h, w, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, 1).requires_grad_()
    roi = (torch.rand(b, h, w, generator=g) > 0.2).double()
    return images, probs, roi


def _brute_force(images, probs, roi, weight, sigma_rgb, sigma_xy):
    """weight * (-sum_k S_k^T W S_k) / B with a dense float64 W (self-pairs included)."""
    b, k, h, w = probs.shape
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    pos = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    total = probs.new_zeros(())
    for i in range(b):
        rgb = images[i].double().reshape(3, -1).t()
        d2 = torch.cdist(pos, pos) ** 2 / (2 * sigma_xy**2)
        d2 = d2 + torch.cdist(rgb, rgb) ** 2 / (2 * sigma_rgb**2)
        kernel = torch.exp(-d2)
        s = (probs[i] * roi[i]).reshape(k, -1)
        total = total - ((s @ kernel) * s).sum()
    return weight * total / b


def test_exact_value_and_gradient_match_brute_force():
    images, probs, roi = _inputs()
    loss = DenseCRFLoss(2e-3, sigma_rgb=15.0, sigma_xy=4.0, filter="exact")
    value = loss(images, probs, roi)
    (grad,) = torch.autograd.grad(value, probs)
    ref = _brute_force(images, probs, roi, 2e-3, 15.0, 4.0)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    assert value.dtype == torch.float64 and value.item() < 0  # rloss's sign
    # float64 arithmetic on float32 features (the library's): agreement to ~1e-6
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-10)
    assert (grad[roi[:, None].expand_as(grad) == 0] == 0).all()  # outside the roi: no part


def test_gradient_is_rlosss_formula():
    """d loss / d S_k = -2 weight W S_k / B, masked by the roi."""
    images, probs, roi = _inputs(b=1, k=2, h=6, w=7, seed=1)
    loss = DenseCRFLoss(0.5, sigma_rgb=20.0, sigma_xy=3.0, filter="exact")
    (grad,) = torch.autograd.grad(loss(images, probs, roi), probs)
    feats = bilateral_features(images[0].permute(1, 2, 0).double(), 3.0, 20.0).double()
    kernel = torch.exp(-0.5 * torch.cdist(feats, feats) ** 2)
    s = (probs[0] * roi[0]).reshape(2, -1)
    expected = (-2 * 0.5 * (s @ kernel) / 1).reshape(1, 2, 6, 7) * roi[:, None]
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-10)


def test_exact_gradcheck():
    images, probs, roi = _inputs(b=1, k=2, h=4, w=5, seed=2)
    loss = DenseCRFLoss(1.0, sigma_rgb=30.0, sigma_xy=2.0, filter="exact")
    assert torch.autograd.gradcheck(lambda p: loss(images, p, roi), (probs,))


def test_lattice_is_the_permutohedral_filter_and_close_to_brute_force():
    images, probs, roi = _inputs(b=2, k=3, h=16, w=20, seed=3)
    weight, srgb, sxy = 1e-2, 15.0, 5.0
    value = DenseCRFLoss(weight, srgb, sxy)(images, probs, roi)
    (grad,) = torch.autograd.grad(value, probs)
    # the plumbing: -weight * sum S . lattice(S) / B, with one lattice per image
    s = (probs * roi[:, None]).detach().float()
    expected = 0.0
    for i in range(2):
        feats = bilateral_features(images[i].permute(1, 2, 0), sxy, srgb)
        vals = s[i].reshape(3, -1).t().contiguous()
        expected += -(vals * build_lattice(feats).filter(vals)).sum().item()
    assert value.item() == pytest.approx(weight * expected / 2, rel=1e-5)
    # the permutohedral lattice (as in rloss's C++) approximates W up to a data-dependent
    # scale: same sign, same order of magnitude, and nearly the same gradient direction
    ref = _brute_force(images, probs, roi, weight, srgb, sxy)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    assert 0.3 < value.item() / ref.item() < 1.0
    cosine = F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0)
    assert cosine > 0.97


def test_scale_factor_runs_on_rlosss_resized_inputs():
    images, probs, roi = _inputs(b=1, k=2, h=12, w=14, seed=4)
    loss = DenseCRFLoss(1e-2, sigma_rgb=15.0, sigma_xy=6.0, scale_factor=0.5, filter="exact")
    value = loss(images, probs, roi)
    small = F.interpolate(images, scale_factor=0.5)
    small_probs = F.interpolate(probs, scale_factor=0.5, mode="bilinear", align_corners=False)
    small_roi = F.interpolate(roi[:, None], scale_factor=0.5)[:, 0]
    ref = _brute_force(small, small_probs, small_roi, 1e-2, 15.0, 3.0)
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(value, probs)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-10)


def test_no_roi_means_every_pixel():
    images, probs, _ = _inputs(seed=5)
    loss = DenseCRFLoss(1e-3, 15.0, 4.0, filter="exact")
    ones = torch.ones(probs.shape[0], *probs.shape[2:], dtype=torch.float64)
    torch.testing.assert_close(loss(images, probs), loss(images, probs, ones))


def test_bad_inputs_name_the_argument():
    images, probs, roi = _inputs()
    loss = DenseCRFLoss(1e-3, 15.0, 4.0)
    with pytest.raises(ValueError, match=r"probs: expected probabilities in \[0, 1\]"):
        loss(images, probs.detach() * 2, roi)
    with pytest.raises(ValueError, match=r"probs: expected probabilities in \[0, 1\]"):
        loss(images, probs.detach() - 0.5, roi)
    with pytest.raises(ValueError, match="roi: expected a binary mask"):
        loss(images, probs, roi * 0.5)
    with pytest.raises(ValueError, match="roi: expected a"):
        loss(images, probs, roi[:, :-1])
    with pytest.raises(ValueError, match="images: expected"):
        loss(images[:, :2], probs, roi)
    with pytest.raises(ValueError, match="probs: expected a"):
        loss(images, probs[0], roi)
    with pytest.raises(ValueError, match="filter"):
        DenseCRFLoss(1.0, 15.0, 4.0, filter="fast")
    with pytest.raises(ValueError, match="sigma_xy"):
        DenseCRFLoss(1.0, 15.0, 0.0)
