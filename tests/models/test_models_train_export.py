"""Forward/backward of light variants, torch.jit.trace export, safetensors round trip.

torch.jit.trace is deprecated in torch 2.13 but still works; torch.export cannot keep H, W
dynamic through ceil-mode pooling (it specialises on parity), so trace is what we test.
"""

from __future__ import annotations

import pytest
import torch

from deepcrf.models import build
from deepcrf.models.io import load_model, load_safetensors, save_safetensors

LIGHT = 1 / 16
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning"
)
IMAGE_MODELS = ["deeplab", "deeplab_msc_largefov", "fcn8s"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_backward_reaches_every_parameter(name):
    model = build(name, 4, width=LIGHT).train()
    if name == "fcn8s":  # zero-initialised score layers would block the gradient to the trunk
        for layer in (model.score_fr, model.score_pool4, model.score_pool3):
            torch.nn.init.normal_(layer.weight, std=0.1)
    x = torch.randn(2, 3, 41, 37)
    target = torch.randint(0, 4, (2, *model(x).shape[-2:]))
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key
        assert p.grad.abs().sum() > 0, key


def test_featmap_unary_pairwise_refine_backward():
    featmap = build("featmap_net", None, width=LIGHT)
    c = featmap.out_channels
    unary = build("unary_net", 5, in_channels=c, width=LIGHT)
    pairwise = build("pairwise_net", 5, in_channels=2 * c, width=LIGHT)
    refine = build("refine_net", 5, width=LIGHT)
    img = torch.randn(1, 3, 70, 90)
    feats = featmap(img)
    scores = unary(feats)
    flat = feats.flatten(2)[0].T  # (nodes, C)
    edges = torch.cat([flat[:-1], flat[1:]], dim=1)
    loss = scores.logsumexp(1).mean() + pairwise(edges).logsumexp(1).mean()
    loss = loss + refine(featmap.pool_features(img), scores).square().mean()
    loss.backward()
    for net in (featmap, unary, pairwise, refine):
        for key, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, key


def test_msc_parameters_are_the_new_layers():
    model = build("deeplab_msc_largefov", 21, width=LIGHT)
    new = {id(p) for p in model.msc_parameters()}
    names = {k for k, p in model.named_parameters() if id(p) in new}
    assert names == {
        k for k, _ in model.named_parameters() if k.startswith(("msc_branches.", "fc8."))
    }
    with pytest.raises(ValueError, match="msc"):
        list(build("deeplab", 21, width=LIGHT).msc_parameters())


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_trace_image_models(name):
    model = build(name, 3, width=LIGHT).eval()
    x = torch.randn(1, 3, 49, 53)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))
        if name.startswith("deeplab"):  # no size-dependent logic: other sizes work too
            y = torch.randn(2, 3, 33, 65)
            torch.testing.assert_close(traced(y), model(y))


def test_trace_lin_networks():
    featmap = build("featmap_net", None, width=LIGHT).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        traced = torch.jit.trace(featmap, x, check_trace=False)
        feats = featmap(x)
        torch.testing.assert_close(traced(x), feats)
        c = featmap.out_channels
        pairwise = build("pairwise_net", 4, in_channels=2 * c, width=LIGHT).eval()
        edges = torch.randn(10, 2 * c)
        traced_pw = torch.jit.trace(pairwise, edges)
        torch.testing.assert_close(traced_pw(edges[:3]), pairwise(edges[:3]))
        refine = build("refine_net", 4, width=LIGHT).eval()
        pools, scores = featmap.pool_features(x), torch.randn(1, 4, 6, 7)
        traced_ref = torch.jit.trace(refine, (pools, scores), check_trace=False)
        torch.testing.assert_close(traced_ref(pools, scores), refine(pools, scores))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("deeplab_msc", {}),
        ("fcn8s", {}),
        ("featmap_net", {"scales": [1.0, 0.5]}),
        ("unary_net", {"in_channels": 9}),
        ("refine_net", {"output_stride": 4}),
    ],
)
def test_safetensors_round_trip(tmp_path, name, options):
    pytest.importorskip("safetensors")
    model = build(name, 6, width=LIGHT, **options)
    path = save_safetensors(model, tmp_path / "m.safetensors")
    again = load_model(path)
    assert type(again) is type(model) and again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    other = build(name, 6, width=LIGHT, **options)
    load_safetensors(other, path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )


def test_safetensors_mismatch_is_a_clear_error(tmp_path):
    pytest.importorskip("safetensors")
    path = save_safetensors(build("deeplab", 21, width=LIGHT), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="does not match the model"):
        load_safetensors(build("deeplab", 5, width=LIGHT), path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.safetensors")
