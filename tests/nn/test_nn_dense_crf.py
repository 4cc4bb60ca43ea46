"""DenseCRF layer: equals refine() at initialisation, exact gradients, batches, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepcrf import refine
from deepcrf.crf import Kernel, Pairwise, mean_field
from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.nn import DenseCRF
from deepcrf.nn import dense_crf as dense_crf_module
from deepcrf.params import CRFParams


def make_inputs(b=2, num_labels=4, h=14, w=17, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    unary = torch.randn(b, num_labels, h, w, generator=g, dtype=dtype) * 2
    image = torch.randint(0, 256, (b, 3, h, w), generator=g).to(dtype)
    image[:, :, :, w // 2 :] *= 0.3  # a colour edge for the bilateral kernel
    return unary, image


@pytest.mark.parametrize("filter", ["lattice", "exact"])
@pytest.mark.parametrize("learn", [False, True])
def test_initial_layer_equals_refine(filter, learn):
    unary, image = make_inputs()
    crf = DenseCRF(
        4, filter=filter, per_class_weights=learn, learn_compat=learn, learn_bandwidths=learn
    ).eval()
    out = crf(unary, image)
    ref = refine(unary, image, logits=True, iterations=10, filter=filter)
    assert out.shape == unary.shape and out.dtype == torch.float32
    # learned bandwidths are exp(log(b)): one float32 ulp off, the lattice notices a little
    assert torch.allclose(out.softmax(1), ref, atol=1e-3 if learn else 1e-4)
    crf.train()  # 5 iterations in training mode
    ref5 = refine(unary, image, logits=True, iterations=5, filter=filter)
    assert torch.allclose(crf(unary, image).softmax(1), ref5, atol=1e-3 if learn else 1e-4)


def test_non_default_kernels_equal_refine():
    unary, image = make_inputs(b=1)
    kwargs = dict(
        gaussian_sxy=(2.0, 4.0),
        gaussian_compat=1.5,
        bilateral_sxy=20.0,
        bilateral_srgb=(10.0, 20.0, 30.0),
        bilateral_compat=4.0,
    )
    for normalization in ["symmetric", "before", "after"]:
        crf = DenseCRF(4, iterations=3, normalization=normalization, **kwargs)
        ref = refine(unary, image, logits=True, iterations=3, normalization=normalization, **kwargs)
        assert torch.allclose(crf(unary, image).softmax(1), ref, atol=1e-4)
    only_gaussian = DenseCRF(4, iterations=3, bilateral_compat=0)
    ref = refine(unary, None, logits=True, iterations=3, bilateral_compat=0)
    assert torch.allclose(only_gaussian(unary, image).softmax(1), ref, atol=1e-4)
    assert torch.allclose(only_gaussian(unary, None).softmax(1), ref, atol=1e-4)
    with pytest.raises(TypeError, match="image"):
        DenseCRF(4)(unary, None)  # the bilateral kernel needs the image


def test_gradcheck_unary_float64_exact():
    unary, image = make_inputs(b=2, num_labels=3, h=5, w=6, dtype=torch.float64)
    crf = DenseCRF(3, iterations=3, filter="exact", learn_compat=True).double()
    with torch.no_grad():
        crf.compat.add_(
            0.3 * torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        )
    x = unary.clone().requires_grad_(True)
    assert crf(x, image).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda u: crf(u, image), (x,), eps=1e-6, atol=1e-6)


def test_every_parameter_matches_finite_differences():
    unary, image = make_inputs(b=2, num_labels=3, h=5, w=6, dtype=torch.float64, seed=3)
    crf = DenseCRF(
        3,
        iterations=3,
        filter="exact",
        per_class_weights=True,
        learn_compat=True,
        learn_bandwidths=True,
        gaussian_sxy=2.0,
        bilateral_sxy=4.0,
        bilateral_srgb=60.0,
    ).double()
    with torch.no_grad():
        crf.compat.add_(
            0.3 * torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        )
    target = torch.randint(0, 3, (2, 5, 6), generator=torch.Generator().manual_seed(4))
    names = {n for n, _ in crf.named_parameters()}
    assert names == {
        "kernel_weights",
        "compat",
        "gaussian_log_bandwidths",
        "bilateral_log_bandwidths",
    }
    F.cross_entropy(crf(unary, image), target).backward()
    for name, param in crf.named_parameters():
        assert param.grad.abs().max() > 1e-6, name  # every parameter gets a gradient

        def loss_of(value, name=name):
            out = torch.func.functional_call(crf, {name: value}, (unary, image))
            return F.cross_entropy(out, target)

        value = param.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(loss_of, (value,), eps=1e-6, atol=1e-7), name


def _generic(*args, **kwargs):
    return Pairwise(*args, **kwargs, stack=False)


@pytest.mark.parametrize("normalization", ["symmetric", "before", "after", "none"])
def test_fused_path_equals_generic_path(normalization, monkeypatch):
    """The stacked-message Function against autograd around NormalizedKernel.apply."""
    unary, image = make_inputs(num_labels=4, h=12, w=13, seed=5)
    target = torch.randint(0, 4, (2, 12, 13), generator=torch.Generator().manual_seed(0))
    weights = (0.5, 0.1) if normalization == "none" else (3.0, 10.0)
    results = []
    for fused in (True, False):
        crf = DenseCRF(
            4,
            iterations=3,
            per_class_weights=True,
            learn_compat=True,
            normalization=normalization,
            gaussian_compat=weights[0],
            bilateral_compat=weights[1],
        )
        with torch.no_grad():
            crf.compat.add_(0.3 * torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
            crf.kernel_weights.mul_(
                1 + 0.2 * torch.rand(2, 4, generator=torch.Generator().manual_seed(2))
            )
        if not fused:
            monkeypatch.setattr(dense_crf_module, "Pairwise", _generic)
        x = unary.clone().requires_grad_(True)
        out = crf(x, image)
        monkeypatch.undo()
        F.cross_entropy(out, target).backward()
        results.append([out.detach(), x.grad] + [p.grad for p in crf.parameters()])
    for a, b in zip(*results):
        # float32 sums in different orders (scales folded into gather weights vs applied
        # to values); differences are rounding, a few 1e-6 of the largest entry
        assert torch.allclose(a, b, rtol=1e-4, atol=5e-5 * b.abs().max())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "bandwidths",
    [{}, {"gaussian_sxy": 2.0, "bilateral_sxy": 10.0, "bilateral_srgb": 20.0}],
)
def test_lattice_bandwidth_gradient_points_like_exact(seed, bandwidths):
    """On piecewise-smooth scenes with colour edges (the CRF's use case)."""
    scenes = SyntheticScenes(2, size=(32, 32), num_classes=5, seed=seed)
    images, labels = zip(*[scenes.generate(i) for i in range(2)])
    image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    label = torch.from_numpy(np.stack(labels))
    unary = coarse_probabilities(label, 5, stride=8, seed=seed).clamp_min(1e-5).log()
    grads = {}
    for filter in ("exact", "lattice"):
        crf = DenseCRF(5, iterations=3, filter=filter, learn_bandwidths=True, **bandwidths)
        F.cross_entropy(crf(unary, image), label).backward()
        grads[filter] = torch.cat(
            [crf.gaussian_log_bandwidths.grad, crf.bilateral_log_bandwidths.grad]
        )
    assert grads["exact"].abs().max() > 1e-3
    cosine = F.cosine_similarity(grads["exact"], grads["lattice"], dim=0)
    assert cosine >= 0.9, (cosine, grads)


def test_lattice_bandwidth_gradient_points_like_exact_on_photos(voc_samples):
    """48x48 centre crops of the shared VOC photos with a coarse, noisy unary from their
    labels: natural colour gradients, where q and g vary inside a lattice cell."""
    from PIL import Image

    size, labels = 48, 21
    g = torch.Generator().manual_seed(0)
    for photo, label_map in voc_samples[:2]:
        pixels = np.asarray(Image.open(photo).convert("RGB"))
        label = np.asarray(Image.open(label_map)).astype(np.int64)
        top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
        crop = (slice(top, top + size), slice(left, left + size))
        image = torch.from_numpy(pixels[crop].copy()).permute(2, 0, 1)[None].float()
        target = torch.from_numpy(label[crop].copy())[None]
        target = torch.where(target == 255, 0, target)
        onehot = F.one_hot(target, labels).permute(0, 3, 1, 2).float()
        coarse = F.interpolate(F.avg_pool2d(onehot, 8), size=(size, size), mode="bilinear")
        noise = 0.1 * torch.rand(1, labels, size, size, generator=g)
        unary = (0.8 * coarse + 0.2 / labels + noise).log()
        grads = {}
        for filter in ("exact", "lattice"):
            crf = DenseCRF(labels, iterations=3, filter=filter, learn_bandwidths=True)
            F.cross_entropy(crf(unary, image), target).backward()
            grads[filter] = torch.cat(
                [crf.gaussian_log_bandwidths.grad, crf.bilateral_log_bandwidths.grad]
            )
        assert grads["exact"].abs().max() > 1e-3
        cosine = F.cosine_similarity(grads["exact"], grads["lattice"], dim=0)
        assert cosine >= 0.9, (photo.name, cosine, grads)


def test_batch_and_list_of_sizes_equal_separate_runs():
    crf = DenseCRF(4, iterations=3, learn_compat=True)
    u1, i1 = make_inputs(b=1, h=10, w=12, seed=1)
    u2, i2 = make_inputs(b=1, h=15, w=9, seed=2)
    u3, i3 = make_inputs(b=1, h=10, w=12, seed=3)
    singles = [crf(u, i)[0] for u, i in ((u1, i1), (u2, i2), (u3, i3))]
    listed = crf([u1[0], u2[0], u3[0]], [i1[0], i2[0], i3[0]])
    assert isinstance(listed, list) and [t.shape for t in listed] == [s.shape for s in singles]
    for a, b in zip(listed, singles):
        assert torch.allclose(a, b, atol=1e-5)
    batched = crf(torch.cat([u1, u3]), torch.cat([i1, i3]))
    assert torch.allclose(batched[0], singles[0], atol=1e-5)
    assert torch.allclose(batched[1], singles[2], atol=1e-5)


def test_autocast_computes_in_float32():
    unary, image = make_inputs()
    crf = DenseCRF(4, iterations=3)
    low = unary.bfloat16()
    expected = crf(low.float(), image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = crf(low, image)
        also = crf(unary, image)
    assert out.dtype == torch.float32 and also.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(also, crf(unary, image), atol=1e-5)


def test_recompute_gives_the_same_gradients():
    unary, image = make_inputs(seed=9)
    target = unary.argmax(1).roll(1, dims=2)
    grads = []
    for recompute in (False, True):
        crf = DenseCRF(
            4, iterations=5, learn_compat=True, per_class_weights=True, recompute=recompute
        )
        x = unary.clone().requires_grad_(True)
        out = crf(x, image)
        F.cross_entropy(out, target).backward()
        grads.append([out.detach(), x.grad, crf.compat.grad, crf.kernel_weights.grad])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_recompute_gives_the_same_bandwidth_gradients():
    """Checkpointed iterations re-run their messages in the backward pass: the deferred
    bandwidth gradient must count each message once."""
    unary, image = make_inputs(seed=10)
    target = unary.argmax(1).roll(1, dims=2)
    grads = []
    for recompute in (False, True):
        crf = DenseCRF(4, iterations=5, learn_bandwidths=True, recompute=recompute)
        x = unary.clone().requires_grad_(True)
        F.cross_entropy(crf(x, image), target).backward()
        grads.append([x.grad, crf.gaussian_log_bandwidths.grad, crf.bilateral_log_bandwidths.grad])
    assert grads[0][1].abs().max() > 1e-6
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a, b)


def test_mean_field_keeps_float64():
    unary, _ = make_inputs(b=1, h=4, w=5, dtype=torch.float64)
    flat = unary[0].reshape(4, -1).t().contiguous()
    feats = torch.rand(20, 2, dtype=torch.float64)
    q = mean_field(flat, Pairwise([Kernel(feats.float(), 1.0)], 4, filter="exact"), 0)
    assert q.dtype == torch.float64
    assert mean_field(flat.float(), Pairwise([Kernel(feats.float(), 1.0)], 4), 2).dtype == (
        torch.float32
    )


def test_extreme_logits_give_finite_outputs_and_gradients():
    unary, image = make_inputs(seed=11)
    unary = torch.where(unary > 0, 1e4, -1e4)
    for filter in ("lattice", "exact"):
        crf = DenseCRF(
            4,
            iterations=3,
            filter=filter,
            learn_compat=True,
            learn_bandwidths=True,
            per_class_weights=True,
        )
        x = unary.clone().requires_grad_(True)
        out = crf(x, image)
        assert torch.isfinite(out).all()
        F.cross_entropy(out, unary.argmax(1).roll(3, 1)).backward()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in crf.parameters())


def test_bad_input_errors_name_the_argument():
    unary, image = make_inputs()
    crf = DenseCRF(4)
    with pytest.raises(ValueError, match="image"):
        crf(unary, image[:, :, :-1])  # size mismatch
    with pytest.raises(ValueError, match=r"image.*3 channels"):
        DenseCRF(4, bilateral_srgb=(13.0, 13.0, 13.0))(unary, image[:, :2])  # two channels
    assert crf(unary, image[:, :2]).shape == unary.shape  # one srgb number: any channels
    with pytest.raises(ValueError, match="image"):
        crf(unary, image[:1])  # batch mismatch
    with pytest.raises(ValueError, match="unary_logits"):
        crf(unary[:, :3], image)  # wrong class count
    with pytest.raises(TypeError, match="unary_logits"):
        crf(unary.long(), image)
    bad = unary.clone()
    bad[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"unary_logits.*NaN"):
        crf(bad, image)
    bad_image = image.clone()
    bad_image[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"image.*NaN or infinite"):
        crf(unary, bad_image)
    with pytest.raises(ValueError, match="unary_logits"):
        crf(unary[0], image[0])  # unbatched tensors: use a list
    with pytest.raises(ValueError, match="image"):
        crf([unary[0]], [image[0], image[1]])
    with pytest.raises(ValueError, match="filter"):
        DenseCRF(4, filter="fast")
    with pytest.raises(ValueError, match="bilateral_srgb"):
        DenseCRF(4, bilateral_srgb=(1.0, -2.0))
    with pytest.raises(ValueError, match=r"image_channels.*bilateral_srgb has 2"):
        DenseCRF(4, bilateral_srgb=(1.0, 2.0), image_channels=3)
    with pytest.raises(ValueError, match=r"spatial_dims.*spacing has 3"):
        DenseCRF(4, spacing=(1.0, 1.0, 2.0), gaussian_sxy=(3.0, 3.0))
    with pytest.raises(ValueError, match="num_classes"):
        DenseCRF(0)


def test_parameters_move_with_the_module_and_state_dict_round_trips():
    crf = DenseCRF(4, learn_compat=True, learn_bandwidths=True, per_class_weights=True)
    with torch.no_grad():
        crf.compat.add_(0.1)
    other = DenseCRF(4, learn_compat=True, learn_bandwidths=True, per_class_weights=True)
    other.load_state_dict(crf.state_dict())
    unary, image = make_inputs(b=1)
    assert torch.equal(other(unary, image), crf(unary, image))
    assert crf.compatibility().shape == (4, 4)
    # defaults are CRFParams() (DeepLab-LargeFOV), bandwidths in feature order (x, y, r, g, b)
    assert torch.allclose(crf.bandwidths("bilateral"), torch.tensor([121.0, 121, 5, 5, 5]))
    p = CRFParams(gaussian_sxy=(2.0, 4.0), bilateral_srgb=(10.0, 20.0, 30.0), iterations=7)
    from_params = DenseCRF.from_params(4, p, learn_compat=True)
    assert from_params.eval_iterations == 7 and from_params.compat is not None
    assert from_params.bandwidths("gaussian").tolist() == [4.0, 2.0]  # (x, y)
    assert from_params.bandwidths("bilateral").tolist() == [121.0, 121, 10, 20, 30]


def test_full_kernel_weights_start_as_the_scalar_layer_and_match_finite_differences():
    unary, image = make_inputs(b=1, num_labels=3, h=5, w=6, dtype=torch.float64, seed=6)
    kw = dict(filter="exact", learn_compat=True, bilateral_sxy=121.0, bilateral_srgb=5.0)
    plain = DenseCRF(3, iterations=3, **kw).double()
    full = DenseCRF(3, iterations=3, full_kernel_weights=True, **kw).double()
    assert full.kernel_weights.shape == (2, 3, 3)
    assert torch.allclose(full(unary, image), plain(unary, image), atol=1e-12)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        full.kernel_weights.add_(0.5 * torch.randn(2, 3, 3, generator=g, dtype=torch.float64))
        full.compat.add_(0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64))
    # the message is mu · sum_k W_k (K_k Q) per pixel: check one step against that formula
    one = DenseCRF(3, iterations=1, full_kernel_weights=True, **kw).double()
    one.load_state_dict(full.state_dict())
    flat = unary[0].reshape(3, -1).t()
    q = flat.softmax(1)
    pos = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij"))
    pos = pos.flip(0).reshape(2, -1).t().double()  # (x, y)
    feats = [pos / 3.0, torch.cat([pos / 121.0, image[0].reshape(3, -1).t() / 5.0], 1)]
    total = torch.zeros_like(q)
    for k, f in enumerate(feats):
        kmat = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
        n = kmat.sum(1) ** -0.5
        total += (n[:, None] * kmat @ (n[:, None] * q)) @ full.kernel_weights[k].t()
    expected = flat - total @ full.compat.t()
    got = one(unary, image)[0].reshape(3, -1).t()
    assert torch.allclose(got, expected, atol=1e-10)
    target = torch.randint(0, 3, (1, 5, 6), generator=g)
    for name in ("kernel_weights", "compat"):

        def loss_of(value, name=name):
            out = torch.func.functional_call(full, {name: value}, (unary, image))
            return F.cross_entropy(out, target)

        value = dict(full.named_parameters())[name].detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(loss_of, (value,), eps=1e-6, atol=1e-7), name
    with pytest.raises(ValueError, match="full_kernel_weights"):
        DenseCRF(3, per_class_weights=True, full_kernel_weights=True)


def test_full_kernel_weights_fused_lattice_gradients_equal_generic(monkeypatch):
    unary, image = make_inputs(num_labels=4, h=12, w=13, seed=8)
    target = torch.randint(0, 4, (2, 12, 13), generator=torch.Generator().manual_seed(0))
    results = []
    for fused in (True, False):
        crf = DenseCRF(4, iterations=3, learn_compat=True, full_kernel_weights=True)
        with torch.no_grad():
            crf.kernel_weights.add_(
                torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3))
            )
        if not fused:
            monkeypatch.setattr(dense_crf_module, "Pairwise", _generic)
        x = unary.clone().requires_grad_(True)
        out = crf(x, image)
        monkeypatch.undo()
        F.cross_entropy(out, target).backward()
        results.append([out.detach(), x.grad, crf.kernel_weights.grad, crf.compat.grad])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-4, atol=5e-5 * b.abs().max())
