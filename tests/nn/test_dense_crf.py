"""nn.DenseCRF beyond 2-D RGB: 3-D volumes with anisotropic spacing, any number of image
channels, extra kernels on user features; float64 exact gradients and lattice vs exact."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from deepcrf.nn import DenseCRF

G = torch.Generator().manual_seed


def volume_inputs(b=2, num_labels=3, spatial=(3, 4, 5), channels=2, extra=(), seed=0):
    g = G(seed)
    unary = torch.randn(b, num_labels, *spatial, generator=g, dtype=torch.float64) * 2
    image = torch.rand(b, channels, *spatial, generator=g, dtype=torch.float64) * 255
    image[:, :, ..., spatial[-1] // 2 :] *= 0.3  # an edge for the bilateral kernel
    features = [torch.randn(b, d, *spatial, generator=g, dtype=torch.float64) for d in extra]
    return unary, image, features


def brute_force(crf: DenseCRF, unary, image, features, iterations):
    """The layer's model written with dense kernel matrices (independent of the library)."""
    b, num_labels, *spatial = unary.shape
    ndim = len(spatial)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
    pos = torch.stack([g.reshape(-1) * s for g, s in zip(grids, crf.spacing)], 1)
    if ndim == 2:
        pos = pos.flip(1)  # feature order (x, y), as the bandwidths
    mu = crf.compatibility().double()
    outs = []
    for i in range(b):
        feats = []
        for kind in crf.kinds:
            bw = crf.bandwidths(kind).double()
            if kind == "gaussian":
                raw = pos
            elif kind == "bilateral":
                raw = torch.cat([pos, image[i].reshape(image.shape[1], -1).t()], 1)
            else:
                f = features[int(kind[5:])][i]
                raw = f.reshape(f.shape[0], -1).t()
            feats.append(raw / bw)
        ops = []
        for f in feats:
            kmat = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
            n = kmat.sum(1) ** -0.5
            ops.append(n[:, None] * kmat * n[None, :])
        z = unary[i].reshape(num_labels, -1).t()
        q = z.softmax(1)
        for _ in range(iterations):
            total = torch.zeros_like(q)
            for k, op in enumerate(ops):
                w = crf.kernel_weights[k].double()
                w = torch.diag(w.expand(num_labels)) if w.dim() == 1 else w
                total += (op @ q) @ w.t()
            logits = z - total @ mu.t()
            q = logits.softmax(1)
        outs.append(logits.t().reshape(num_labels, *spatial))
    return torch.stack(outs)


def perturb(crf: DenseCRF, seed: int) -> None:
    """Move every parameter off its initial value (so no gradient is trivially symmetric)."""
    g = G(seed)
    with torch.no_grad():
        for name, p in crf.named_parameters():
            scale = 0.1 if "bandwidths" in name else 0.3
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


CASES = {
    # 3-D volume, anisotropic spacing (depth 2.5x the in-plane size), 2-channel image
    "volume": dict(
        layer=dict(
            spacing=(2.5, 1.0, 1.0),
            gaussian_sxy=(2.0, 1.5, 1.5),
            bilateral_sxy=(4.0, 3.0, 3.0),
            bilateral_srgb=(60.0, 90.0),
        ),
        inputs=dict(spatial=(3, 4, 5), channels=2),
    ),
    # 2-D image with 4 channels (e.g. RGB-D) and an extra kernel on 2-D user features
    "rgbd_extra": dict(
        layer=dict(
            gaussian_sxy=2.0,
            bilateral_sxy=4.0,
            bilateral_srgb=(60.0, 70.0, 80.0, 50.0),
            extra_kernels=[2],
            extra_compat=2.0,
        ),
        inputs=dict(spatial=(5, 6), channels=4, extra=(2,)),
    ),
}


def make(case, seed=0, **options):
    spec = CASES[case]
    crf = DenseCRF(3, iterations=3, **spec["layer"], **options).double()
    return crf, volume_inputs(seed=seed, **spec["inputs"])


@pytest.mark.parametrize("case", list(CASES))
def test_exact_layer_equals_the_dense_matrix_model(case):
    crf, (unary, image, features) = make(
        case, filter="exact", learn_compat=True, full_kernel_weights=True, learn_bandwidths=True
    )
    perturb(crf, 1)
    out = crf(unary, image, features)
    assert out.shape == unary.shape and out.dtype == torch.float64
    expected = brute_force(crf, unary, image, features, 3)
    assert torch.allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_unary_float64_exact(case):
    crf, (unary, image, features) = make(case, filter="exact", learn_compat=True)
    perturb(crf, 2)
    unary, image, features = unary[:1], image[:1], [f[:1] for f in features]
    x = unary.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u: crf(u, image, features), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(("case", "weights"), itertools.product(list(CASES), ["per_class", "full"]))
def test_every_parameter_matches_finite_differences(case, weights):
    crf, (unary, image, features) = make(
        case,
        seed=3,
        filter="exact",
        learn_compat=True,
        learn_bandwidths=True,
        per_class_weights=weights == "per_class",
        full_kernel_weights=weights == "full",
    )
    perturb(crf, 4)
    names = {n for n, _ in crf.named_parameters()}
    expected = {"kernel_weights", "compat", "gaussian_log_bandwidths", "bilateral_log_bandwidths"}
    expected |= {f"extra{i}_log_bandwidths" for i in range(len(crf.extra_kernels))}
    assert names == expected
    spatial = unary.shape[2:]
    assert crf.bilateral_log_bandwidths.shape == (len(spatial) + image.shape[1],)
    target = torch.randint(0, 3, (unary.shape[0], *spatial), generator=G(5))
    F.cross_entropy(crf(unary, image, features), target).backward()
    for name, param in crf.named_parameters():
        assert param.grad.abs().max() > 1e-6, name  # every parameter gets a gradient

        def loss_of(value, name=name):
            out = torch.func.functional_call(crf, {name: value}, (unary, image, features))
            return F.cross_entropy(out, target)

        value = param.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(loss_of, (value,), eps=1e-6, atol=1e-7), name


def scene(spatial, channels, extra, seed):
    """Piecewise-constant image (two regions, small noise), smooth user features (ramps),
    unaries that roughly follow the regions: the data a CRF is used on."""
    g = G(seed)
    grids = torch.meshgrid(*[torch.linspace(0, 1, n) for n in spatial], indexing="ij")
    region = (grids[-1] + 0.3 * grids[0] > 0.55).float()
    colours = torch.rand(2, channels, generator=g) * 200
    image = colours[region.long()].movedim(-1, 0) + 4 * torch.randn(channels, *spatial, generator=g)
    labels = torch.nn.functional.one_hot(region.long(), 3).movedim(-1, 0).float()
    unary = 2 * labels + torch.randn(3, *spatial, generator=g)
    features = [torch.stack([grids[k % len(spatial)] * 3 for k in range(d)]) for d in extra]
    return unary[None], image[None], [f[None] for f in features]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("learn", [False, True])
def test_lattice_is_within_tolerance_of_exact(case, learn):
    spec = CASES[case]
    spatial = tuple(2 * s for s in spec["inputs"]["spatial"])
    unary, image, features = scene(
        spatial, spec["inputs"]["channels"], spec["inputs"].get("extra", ()), seed=6
    )
    outs = {}
    for filter in ("exact", "lattice"):
        crf = DenseCRF(3, iterations=3, filter=filter, learn_bandwidths=learn, **spec["layer"])
        outs[filter] = crf(unary, image, features).softmax(1)
    # the permutohedral lattice approximates the Gaussian: marginals agree closely (a few
    # ambiguous pixels on region boundaries may differ more)
    diff = (outs["lattice"] - outs["exact"]).abs().detach()
    worst = diff.flatten().quantile(0.99)
    assert diff.mean() < 0.02 and worst < 0.1 and diff.max() < 0.35, (diff.mean(), worst)
    agree = (outs["lattice"].argmax(1) == outs["exact"].argmax(1)).float().mean()
    assert agree > 0.97


def test_fixed_number_bandwidths_take_any_axes_and_channels():
    crf = DenseCRF(3, iterations=2, gaussian_sxy=2.0, bilateral_sxy=3.0, bilateral_srgb=40.0)
    for spatial, channels in (((6, 7), 1), ((3, 4, 5), 2), ((5, 6), 7)):
        unary, image, _ = volume_inputs(b=1, spatial=spatial, channels=channels)
        assert crf(unary.float(), image.float()).shape == unary.shape
    # learned bandwidths given as numbers take the first input's counts while untrained
    learned = DenseCRF(3, iterations=2, learn_bandwidths=True, bilateral_srgb=40.0)
    params = dict(learned.named_parameters())
    unary, image, _ = volume_inputs(b=1, spatial=(3, 4, 5), channels=2)
    learned(unary.float(), image.float()).sum().backward()
    assert learned.gaussian_log_bandwidths.shape == (3,)
    assert torch.allclose(learned.bandwidths("bilateral"), torch.tensor([121.0] * 3 + [40.0] * 2))
    assert all(p is params[n] for n, p in learned.named_parameters())  # same objects
    assert learned.bilateral_log_bandwidths.grad.shape == (5,)
    unary2, image2, _ = volume_inputs(b=1, spatial=(6, 7), channels=2)
    with pytest.raises(ValueError, match="spatial_dims"):
        learned(unary2.float(), image2.float())  # trained (has a gradient): no silent change
    stated = DenseCRF(3, learn_bandwidths=True, spatial_dims=2)
    with pytest.raises(ValueError, match="spatial_dims"):
        stated(unary.float(), image.float()[:, :1].expand(1, 3, 3, 4, 5))


def test_lists_of_volumes_and_features_equal_separate_runs():
    crf, _ = make("rgbd_extra", learn_compat=True)
    crf = crf.float()
    runs = [
        volume_inputs(b=1, spatial=s, channels=4, extra=(2,), seed=i)
        for i, s in enumerate([(5, 6), (7, 4)])
    ]
    runs = [(u.float(), im.float(), [f.float() for f in fs]) for u, im, fs in runs]
    singles = [crf(u, im, fs)[0] for u, im, fs in runs]
    listed = crf(
        [u[0] for u, _, _ in runs], [im[0] for _, im, _ in runs], [[fs[0][0] for _, _, fs in runs]]
    )
    for a, b in zip(listed, singles):
        assert torch.allclose(a, b, atol=1e-5)


def test_bad_features_are_named():
    crf, (unary, image, features) = make("rgbd_extra")
    with pytest.raises(ValueError, match="features: expected 1"):
        crf(unary, image)
    with pytest.raises(ValueError, match=r"features\[0\]"):
        crf(unary, image, [features[0][:, :1]])
    with pytest.raises(ValueError, match="extra_kernels"):
        DenseCRF(3, extra_kernels=[0])
