"""DenseCRFLoss against a brute-force O(N^2) float64 computation of rloss's definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deepcrf.features import bilateral_features
from deepcrf.lattice import build_lattice
from deepcrf.nn import DenseCRFLoss
from deepcrf.nn import loss as loss_module


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


@pytest.mark.parametrize("filter", [None, "exact"])
def test_default_and_exact_equal_float64_brute_force(filter):
    """The default (auto: exact on small images) is the definition to float64 rounding."""
    images, probs, roi = _inputs(b=2, k=3, h=12, w=15, seed=6)
    kwargs = {} if filter is None else {"filter": filter}
    value = DenseCRFLoss(1e-2, 15.0, 5.0, **kwargs)(images, probs, roi)
    (grad,) = torch.autograd.grad(value, probs)
    ref = _brute_force(images, probs, roi, 1e-2, 15.0, 5.0)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    torch.testing.assert_close(value, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-15)


def test_default_float32_is_close_to_brute_force():
    images, probs, roi = _inputs(b=1, k=4, h=20, w=24, seed=7)
    probs32 = probs.detach().float().requires_grad_()
    value = DenseCRFLoss(1e-2, 15.0, 5.0)(images, probs32, roi.float())
    (grad,) = torch.autograd.grad(value, probs32)
    ref = _brute_force(images, probs, roi, 1e-2, 15.0, 5.0)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-9)


def test_auto_uses_the_lattice_above_its_limit(monkeypatch):
    images, probs, roi = _inputs(b=1, k=2, h=10, w=12, seed=8)
    lattice = DenseCRFLoss(1e-2, 15.0, 5.0, filter="lattice")(images, probs, roi)
    exact = DenseCRFLoss(1e-2, 15.0, 5.0, filter="exact")(images, probs, roi)
    monkeypatch.setattr(loss_module, "AUTO_EXACT_POINTS", 10 * 12)
    assert DenseCRFLoss(1e-2, 15.0, 5.0)(images, probs, roi).item() == exact.item()
    monkeypatch.setattr(loss_module, "AUTO_EXACT_POINTS", 10 * 12 - 1)
    assert DenseCRFLoss(1e-2, 15.0, 5.0)(images, probs, roi).item() == lattice.item()
    assert lattice.item() != exact.item()


def test_lattice_is_the_permutohedral_filter_over_its_gain():
    images, probs, roi = _inputs(b=2, k=3, h=16, w=20, seed=3)
    weight, srgb, sxy = 1e-2, 15.0, 5.0
    value = DenseCRFLoss(weight, srgb, sxy, filter="lattice")(images, probs, roi)
    # the plumbing: -weight * sum S . lattice(S) / gain / B, with one lattice per image
    s = (probs * roi[:, None]).detach().float()
    expected = 0.0
    for i in range(2):
        feats = bilateral_features(images[i].permute(1, 2, 0), sxy, srgb)
        vals = s[i].reshape(3, -1).t().contiguous()
        expected += -(vals * build_lattice(feats).filter(vals)).sum().item()
    expected /= loss_module.LATTICE_GAIN
    assert value.item() == pytest.approx(weight * expected / 2, rel=1e-5)


def _smooth_scene(h, w, seed):
    """A generated photo-like image: smooth colour regions, an edge and mild noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64) * 255
    image = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    image[:, h // 3 :, w // 2 :] = torch.tensor([30.0, 160.0, 60.0], dtype=torch.float64)[
        :, None, None
    ]
    return (image + torch.randn(3, h, w, generator=g, dtype=torch.float64) * 4).clamp(0, 255)


def _photo_crops(paths, h, w):
    from PIL import Image

    crops = []
    for photo, _ in paths:
        pixels = torch.from_numpy(__import__("numpy").array(Image.open(photo).convert("RGB")))
        small = F.interpolate(pixels.permute(2, 0, 1)[None].double(), size=(h, w), mode="area")
        crops.append(small[0])
    return crops


def _lattice_vs_brute_force(image, seed):
    """(value ratio, gradient cosine) of filter="lattice" against float64 brute force."""
    h, w = image.shape[1:]
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 4, h // 8 + 1, w // 8 + 1, generator=g, dtype=torch.float64) * 3
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    probs = torch.softmax(logits, 1).requires_grad_()
    roi = torch.ones(1, h, w, dtype=torch.float64)
    value = DenseCRFLoss(1e-3, 15.0, 0.4 * w, filter="lattice")(image[None], probs, roi)
    (grad,) = torch.autograd.grad(value, probs)
    ref = _brute_force(image[None], probs, roi, 1e-3, 15.0, 0.4 * w)
    (ref_grad,) = torch.autograd.grad(ref, probs)
    cosine = F.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0).item()
    return value.item() / ref.item(), cosine


def test_lattice_estimate_is_unbiased_on_generated_scenes():
    """Over its gain the lattice estimates S^T W S without the raw lattice's ~0.55x bias."""
    results = [_lattice_vs_brute_force(_smooth_scene(48, 64, seed), seed) for seed in range(3)]
    for ratio, cosine in results:
        assert 0.8 < ratio < 1.25
        assert cosine > 0.97


def test_lattice_estimate_is_unbiased_on_photos(voc_samples):
    results = [
        _lattice_vs_brute_force(image, seed)
        for seed, image in enumerate(_photo_crops(voc_samples, 48, 64))
    ]
    for ratio, cosine in results:
        assert 0.8 < ratio < 1.25
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
