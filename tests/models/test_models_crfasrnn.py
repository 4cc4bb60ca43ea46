"""CRFasRNN: FCN-8s + DenseCRF, the paper's CRF defaults, registry round trip, image checks."""

from __future__ import annotations

import pytest
import torch

from deepcrf.models import build, load_model, save_safetensors
from deepcrf.models.crfasrnn import CRFASRNN_DEFAULTS, CRFasRNN
from deepcrf.nn import DenseCRF

LIGHT = 1 / 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _inputs(b: int = 1, h: int = 13, w: int = 17):
    image = torch.randint(0, 256, (b, 3, h, w)).float()
    return (image - 120.0) / 60.0, image


def test_defaults_are_crf_as_rnn():
    model = build("crfasrnn", 4, width=LIGHT)
    assert CRFasRNN.needs_image and model.needs_image
    crf = model.crf
    assert (crf.iterations, crf.eval_iterations) == (5, 10)
    assert crf.kinds == ("gaussian", "bilateral")
    assert crf.compat is not None and torch.equal(crf.compat, -torch.eye(4))
    # per-class weights: spatial 3, bilateral 5
    assert torch.equal(crf.kernel_weights, torch.tensor([[3.0] * 4, [5.0] * 4]))
    assert torch.equal(crf.bandwidths("gaussian"), torch.tensor([3.0, 3.0]))
    assert torch.equal(crf.bandwidths("bilateral"), torch.tensor([160.0, 160.0, 3.0, 3.0, 3.0]))


def test_forward_is_fcn_then_crf():
    model = build("crfasrnn", 3, width=LIGHT).eval()
    for p in model.fcn.parameters():  # the score layers start at zero: give them something
        torch.nn.init.normal_(p, std=0.1)
    x, image = _inputs(2)
    with torch.no_grad():
        out = model(x, image)
        scores = model.fcn(x)
        expected = DenseCRF(3, **CRFASRNN_DEFAULTS).eval()(scores, image)
    assert out.shape == (2, 3, 13, 17)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, scores)  # the CRF did something


def test_crf_overrides_and_round_trip(tmp_path):
    crf = {"iterations": 2, "eval_iterations": 3, "normalization": "after"}
    model = build("crfasrnn", 3, width=LIGHT, crf=crf, dropout=0.0)
    assert model.crf.iterations == 2 and model.crf.normalization == "after"
    assert model.crf.gaussian_bandwidths.tolist() == [3.0, 3.0]  # other defaults kept
    with torch.no_grad():
        model.crf.compat.copy_(torch.randn(3, 3))
        model.fcn.score_fr.weight.normal_()
    path = save_safetensors(model, tmp_path / "m.safetensors")
    loaded = load_model(path).eval()
    assert loaded.config == model.config
    assert loaded.crf.eval_iterations == 3
    x, image = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, image), model.eval()(x, image))


def test_image_is_required():
    model = build("crfasrnn", 3, width=LIGHT).eval()
    x, image = _inputs()
    with pytest.raises(ValueError, match="image is required"):
        model(x)
    with pytest.raises(ValueError, match="does not match"):
        model(x, image[:, :, :5])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(x, image[:, :2])


def test_bad_crf_option():
    with pytest.raises(TypeError, match="bad options for model 'crfasrnn'"):
        build("crfasrnn", 3, width=LIGHT, crf={"colour": 1})
    with pytest.raises(ValueError, match="num_classes"):
        CRFasRNN(3, width=LIGHT, crf={"num_classes": 4})

