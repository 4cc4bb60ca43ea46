"""CRF-as-RNN and the joint DeepLab + CRF model: at initialisation each equals its CNN
followed by ``deepcrf.refine`` with the same CRF parameters (the post-processing pipeline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepcrf.dense import refine
from deepcrf.models import build, load_model, save_safetensors
from deepcrf.params import PRESETS


def _inputs(h=30, w=26):
    torch.manual_seed(0)
    x = torch.randn(1, 3, h, w)
    image = (torch.rand(1, 3, h, w) * 255).round()
    return x, image


def test_crfasrnn_equals_fcn8s_then_refine():
    model = build("crfasrnn", 4, width=1 / 16).eval()
    for p in model.fcn.parameters():  # FCN-8s starts with zero score layers: perturb them
        torch.nn.init.normal_(p, std=0.1)
    x, image = _inputs()
    with torch.no_grad():
        out = model(x, image)
        scores = model.fcn(x)
    params = PRESETS["crfasrnn"].to_dict()
    expected = refine(scores, image, logits=True, **params)
    assert model.crf.eval_iterations == 10 and model.crf.iterations == 5
    assert model.crf.compat is not None and model.crf.kernel_weights.shape == (2, 4)
    torch.testing.assert_close(torch.softmax(out, 1), expected, atol=1e-4, rtol=0)


def test_joint_equals_upsampled_deeplab_then_refine_and_round_trips(tmp_path):
    model = build("joint_deeplab_crf", 4, width=1 / 16, crf={"bilateral_sxy": 30.0}).eval()
    x, image = _inputs()
    with torch.no_grad():
        out = model(x, image)
        scores = F.interpolate(model.cnn(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)  # fmt: skip
    params = {**PRESETS["deeplab_largefov"].to_dict(), "bilateral_sxy": 30.0}
    expected = refine(scores, image, logits=True, **params)
    assert model.crf.learn_bandwidths
    torch.testing.assert_close(torch.softmax(out, 1), expected, atol=1e-3, rtol=0)
    save_safetensors(model, tmp_path / "joint.safetensors")
    again = load_model(tmp_path / "joint.safetensors").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, image), out)
