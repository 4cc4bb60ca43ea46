"""CRF-as-RNN conversion: the released CRF blobs and their sign convention, checked numerically.

Caffe's MultiStageMeanfield computes, T times, Q = softmax(prev) and
prev = unary - C·(W_s·S(Q) + W_b·B(Q)) with S, B the spatial / bilateral Gaussian filters
normalised after filtering (1 / K·1), C initialised to -I. crfasrnn_pytorch computes
prev = logits + C'·(...) with C' initialised to +I. Both are re-implemented here in plain
float64 torch (brute-force kernels, the bilateral one on Caffe's mean-subtracted BGR input)
and compared with deepcrf's DenseCRF holding the converted parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caffemodel_writer import write_caffemodel
from deepcrf.models import load_model
from deepcrf.models.convert import convert, convert_file
from deepcrf.nn import DenseCRF
from released_layers import VGG_INDEX, c, crfasrnn, expected_fcn, rand

K = 5  # classes: small, so the matrices are cheap but not trivially symmetric
H, W = 6, 7
THETA_ALPHA, THETA_BETA, THETA_GAMMA = 160.0, 3.0, 3.0
#: DenseCRF computes the position features in float32 (bit-identical to refine / pydensecrf)
#: before the float64 brute-force filtering: agreement to ~1e-8, far below the > 1e-2 that a
#: wrong sign or a transposed matrix produces (checked below)
TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def gaussian(features: torch.Tensor) -> torch.Tensor:
    """Brute-force kernel matrix exp(-|f_i - f_j|^2 / 2), self included (as Caffe's lattice)."""
    return torch.exp(-0.5 * torch.cdist(features, features) ** 2)


def caffe_filters(image_bgr_minus_mean: torch.Tensor):
    """S and B of Caffe's layer: (L, N) -> (L, N), normalised after filtering."""
    rows, cols = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    xy = torch.stack([cols.ravel(), rows.ravel()], 1)  # Caffe: p % width, p / width
    rgb = image_bgr_minus_mean.reshape(3, -1).t()
    ks = gaussian(xy / THETA_GAMMA)
    kb = gaussian(torch.cat([xy / THETA_ALPHA, rgb / THETA_BETA], 1))
    ns, nb = ks.sum(1), kb.sum(1)
    return (lambda q: (q @ ks.t()) / ns), (lambda q: (q @ kb.t()) / nb)


def caffe_mean_field(unary, image_bgr, ws, wb, compat, iterations, sign=-1.0):
    """Caffe's formula (sign=-1: unary - C·msg) or crfasrnn_pytorch's (sign=+1)."""
    spatial, bilateral = caffe_filters(image_bgr)
    prev = unary
    for _ in range(iterations):
        q = torch.softmax(prev, dim=0)
        message = ws @ spatial(q) + wb @ bilateral(q)
        prev = unary + sign * (compat @ message)
    return prev


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, H, W), generator=g).double()  # RGB 0..255
    image[:, :3, :3] = torch.tensor([250.0, 10.0, 10.0]).view(3, 1, 1)  # an edge to respect
    unary = 2.0 * torch.randn(K, H, W, generator=g, dtype=torch.float64)
    mean_bgr = torch.tensor([104.007, 116.669, 122.679], dtype=torch.float64).view(3, 1, 1)
    return unary, image, image.flip(0) - mean_bgr


def _exact_copy(crf: DenseCRF) -> DenseCRF:
    """The same CRF computed with brute-force filters in float64 (no lattice error)."""
    exact = DenseCRF(
        crf.num_classes,
        iterations=crf.iterations,
        eval_iterations=crf.eval_iterations,
        gaussian_sxy=THETA_GAMMA,
        bilateral_sxy=THETA_ALPHA,
        bilateral_srgb=THETA_BETA,
        full_kernel_weights=True,
        learn_compat=True,
        normalization=crf.normalization,
        filter="exact",
    )
    exact.load_state_dict(crf.state_dict())
    return exact.double().eval()


def _crfrnn_file(tmp_path, rng, scale=0.4):
    layers = crfasrnn(rng, classes=K)
    ws, wb, compat = (torch.from_numpy(b.reshape(K, K)).double() * scale for b in layers[-1][1])
    layers[-1] = ("inference1", [m.numpy().astype(np.float32).reshape(1, 1, K, K)
                                 for m in (ws, wb, compat)])  # fmt: skip
    path = write_caffemodel(tmp_path / "TVG_CRFRNN_COCO_VOC.caffemodel", layers, v1=True)
    return path, layers


def test_crfasrnn_caffemodel_conversion(tmp_path, rng):
    path, layers = _crfrnn_file(tmp_path, rng)
    model, report = convert(path, "crfasrnn", num_classes=K)
    state = model.state_dict()
    blobs = dict(layers)
    for (layer, i), param in expected_fcn("fcn.").items():
        torch.testing.assert_close(state[param], torch.from_numpy(blobs[layer][i]).reshape(
            state[param].shape), rtol=0, atol=0)  # fmt: skip
    ws, wb, compat = (torch.from_numpy(b.reshape(K, K)) for b in blobs["inference1"])
    assert torch.equal(model.crf.kernel_weights[0], ws)  # spatial = Gaussian kernel
    assert torch.equal(model.crf.kernel_weights[1], wb)
    assert torch.equal(model.crf.compat, compat)  # same sign convention: mu = C
    assert model.crf.kinds == ("gaussian", "bilateral")
    assert model.crf.normalization == "after"
    assert model.config["normalize"] == {"mode": "caffe", "mean": [104.007, 116.669, 122.679]}
    assert model.needs_image
    assert report.left_out == []


def test_mean_field_equals_caffe_formula_with_original_c(tmp_path, rng):
    path, layers = _crfrnn_file(tmp_path, rng)
    model, _ = convert(path, "crfasrnn", num_classes=K)
    blobs = dict(layers)["inference1"]
    ws, wb, compat = (torch.from_numpy(b.reshape(K, K)).double() for b in blobs)
    unary, image_rgb, image_bgr = _inputs()
    crf = _exact_copy(model.crf)
    with torch.no_grad():
        got = crf(unary[None], image_rgb[None])[0].reshape(K, -1)
    want = caffe_mean_field(unary.reshape(K, -1), image_bgr, ws, wb, compat, iterations=10)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
    # the check can fail: the opposite sign (or a transposed W) gives something else
    flipped = caffe_mean_field(unary.reshape(K, -1), image_bgr, ws, wb, -compat, iterations=10)
    transposed = caffe_mean_field(unary.reshape(K, -1), image_bgr, ws.t(), wb, compat, 10)
    assert (got - flipped).abs().max() > 1e-2 and (got - transposed).abs().max() > 1e-2
    # training mode runs the 5 iterations of the released training prototxt
    crf.train()
    with torch.no_grad():
        got5 = crf(unary[None], image_rgb[None])[0].reshape(K, -1)
    want5 = caffe_mean_field(unary.reshape(K, -1), image_bgr, ws, wb, compat, iterations=5)
    torch.testing.assert_close(got5, want5, rtol=TOL, atol=TOL)


def _pytorch_state(rng):
    """crfasrnn_pytorch's state dict: Fcn8s keys + crfrnn.* (upscore2 has a bias)."""
    state = {}
    outs = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for layer, name in enumerate(VGG_INDEX):
        cin = 3 if layer == 0 else c(outs[layer - 1])
        state[f"{name}.weight"] = rand(rng, c(outs[layer]), cin, 3, 3)
        state[f"{name}.bias"] = rand(rng, c(outs[layer]))
    shapes = {
        "fc6": (c(4096), c(512), 7, 7), "fc7": (c(4096), c(4096), 1, 1),
        "score_fr": (K, c(4096), 1, 1), "score_pool3": (K, c(256), 1, 1),
        "score_pool4": (K, c(512), 1, 1), "upscore2": (K, K, 4, 4),
    }  # fmt: skip
    for module, shape in shapes.items():
        state[f"{module}.weight"] = rand(rng, *shape)
        state[f"{module}.bias"] = rand(rng, shape[0] if module != "upscore2" else K)
    state["upscore8.weight"] = rand(rng, K, K, 16, 16)
    state["upscore_pool4.weight"] = rand(rng, K, K, 4, 4)
    for key in ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix"):
        state[f"crfrnn.{key}"] = 0.4 * rand(rng, K, K)
    return {k: torch.from_numpy(v) for k, v in state.items()}


def test_crfasrnn_pytorch_pth(tmp_path, rng):
    state = _pytorch_state(rng)
    path = tmp_path / "crfasrnn_weights.pth"
    torch.save(state, path)
    model, _ = convert(path, "crfasrnn_pytorch", num_classes=K)
    ours = model.state_dict()
    for key, value in state.items():
        if key.startswith("crfrnn."):
            continue
        module, kind = key.rsplit(".", 1)
        target = f"fcn.features.{VGG_INDEX[module]}.{kind}" if module in VGG_INDEX else f"fcn.{key}"
        assert torch.equal(ours[target], value), key
    assert torch.equal(model.crf.kernel_weights[0], state["crfrnn.spatial_ker_weights"])
    assert torch.equal(model.crf.kernel_weights[1], state["crfrnn.bilateral_ker_weights"])
    assert torch.equal(model.crf.compat, -state["crfrnn.compatibility_matrix"])
    assert model.config["normalize"]["mean"] == [103.939, 116.779, 123.68]
    # the port's formula (logits + C'·message) with its original C'
    unary, image_rgb, image_bgr = _inputs(1)
    with torch.no_grad():
        got = _exact_copy(model.crf)(unary[None], image_rgb[None])[0].reshape(K, -1)
    keys = ("spatial_ker_weights", "bilateral_ker_weights", "compatibility_matrix")
    ws, wb, cp = (state[f"crfrnn.{k}"].double() for k in keys)
    want = caffe_mean_field(unary.reshape(K, -1), image_bgr, ws, wb, cp, 10, sign=+1.0)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
    # wrapped checkpoints (DataParallel prefix, {"state_dict": ...}) load too
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    wrapped, _ = convert(path, "crfasrnn_pytorch", num_classes=K)
    assert torch.equal(wrapped.crf.compat, model.crf.compat)


def test_pth_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"bad\.pth is not a PyTorch state dict"):
        convert(bad, "crfasrnn_pytorch")
    torch.save({"conv1_1.weight": torch.zeros(4, 3, 3, 3)}, bad)  # a light model: fast
    with pytest.raises(ValueError, match=r"layers missing from the source: conv1_1\.bias"):
        convert(bad, "crfasrnn_pytorch")


def test_converted_model_runs_and_round_trips(tmp_path, rng):
    path, _ = _crfrnn_file(tmp_path, rng, scale=0.1)
    out = tmp_path / "crfasrnn.safetensors"
    convert_file(path, "crfasrnn", out, num_classes=K)
    model = load_model(out).eval()
    assert model.config["crf"]["full_kernel_weights"] is True
    image = torch.randint(0, 256, (1, 3, 19, 23)).float()
    x = image.flip(1) - torch.tensor([104.007, 116.669, 122.679]).view(1, 3, 1, 1)
    with torch.no_grad():
        out_logits = model(x, image)
    assert out_logits.shape == (1, K, 19, 23) and torch.isfinite(out_logits).all()
