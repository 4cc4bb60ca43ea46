"""Running trained models: eval --model (with and without the CRF), predict, probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from recipe_settings import FAST

from deepcrf.cli import main as cli
from deepcrf.data import VOCSegmentation
from deepcrf.dense import refine
from deepcrf.models import build
from deepcrf.params import CRFParams
from deepcrf.recipes import load_run, main, model_probabilities, resolve_config


@pytest.fixture(scope="module")
def deeplab_run(voc_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "deeplab"
    main(resolve_config("deeplab", "tiny", FAST, data_root=str(voc_tree)), out)
    return out


def test_model_probabilities_are_the_upsampled_softmax(deeplab_run, voc_tree):
    run = load_run(deeplab_run)
    # the tiny preset chooses its post-processing CRF on its training images at the end
    chosen = json.loads((deeplab_run / "crf_search.json").read_text())["best"]
    assert run.crf == CRFParams.from_dict(chosen) and not run.has_own_crf
    image = VOCSegmentation(voc_tree, "val", num_classes=7)[0]["raw_image"].numpy()
    probs = model_probabilities(run.model, image)
    assert probs.shape == (7, *image.shape[:2]) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    from deepcrf.data.transforms import normalize

    scores = run.model(normalize(image, "imagenet")[None])
    assert scores.shape[-1] == -(-image.shape[1] // 8)  # stride-8 scores, up-sampled above
    same = load_run(deeplab_run / "model.safetensors")  # the file form
    np.testing.assert_array_equal(model_probabilities(same.model, image), probs)


def test_eval_model_with_and_without_crf(deeplab_run, voc_tree, tmp_path):
    base = ["eval", "--model", str(deeplab_run), "--data-root", str(voc_tree), "--split",
            "val", "--trimap", "1,3", "--quiet"]  # fmt: skip
    assert cli([*base, "--json", str(tmp_path / "plain.json"),
                "--save-probs", str(tmp_path / "probs")]) == 0  # fmt: skip
    assert cli([*base, "--crf", "--json", str(tmp_path / "crf.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    crf = json.loads((tmp_path / "crf.json").read_text())
    for key in ("miou", "pixel_acc", "mean_acc", "fw_iou", "iou", "trimap"):
        assert key in plain and key in crf
    assert set(plain["trimap"]) == {"1", "3"}
    carried = load_run(deeplab_run).crf  # what --crf applies: the run's chosen parameters
    assert crf["crf"] == carried.to_dict() and plain["crf"] is None

    # the same numbers by hand: saved probabilities -> refine -> confusion matrix
    from deepcrf.metrics import ConfusionMatrix

    dataset = VOCSegmentation(voc_tree, "val", num_classes=7)
    files = sorted((tmp_path / "probs").glob("*.npy"))
    assert [f.stem for f in files] == sorted(dataset.names)
    cm_plain, cm_crf = ConfusionMatrix(7), ConfusionMatrix(7)
    for i in range(len(dataset)):
        sample = dataset[i]
        probs = np.load(tmp_path / "probs" / f"{sample['name']}.npy")
        raw = sample["raw_image"].numpy()
        cm_plain.update(probs.argmax(0), sample["label"])
        refined = refine(probs, raw, **carried.to_dict())
        cm_crf.update(refined.argmax(0), sample["label"])
    assert plain["miou"] == pytest.approx(cm_plain.scores()["miou"])
    assert crf["miou"] == pytest.approx(cm_crf.scores()["miou"])

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"iterations": 0}))  # no mean field: the network's labels
    assert cli([*base, "--crf-params", str(params), "--json", str(tmp_path / "p0.json")]) == 0
    assert json.loads((tmp_path / "p0.json").read_text())["miou"] == pytest.approx(plain["miou"])


def test_eval_model_errors(deeplab_run, voc_tree, tmp_path, capsys):
    assert cli(["eval", "--model", str(tmp_path / "none"), "--data-root", str(voc_tree)]) == 1
    assert "no such run folder" in capsys.readouterr().err
    assert cli(["eval", "--model", str(deeplab_run), "--data-root", str(voc_tree),
                "--split", "nosplit"]) == 1  # fmt: skip
    assert "nosplit" in capsys.readouterr().err
    assert cli(["eval", "--pred", str(tmp_path)]) == 1
    assert "--gt, --num-classes: required" in capsys.readouterr().err
    params = tmp_path / "params.json"
    params.write_text('{"iterations": 1}')
    assert cli(["eval", "--model", str(deeplab_run), "--data-root", str(voc_tree),
                "--crf-params", str(params), "--json", str(params)]) == 1  # fmt: skip
    assert "--crf-params input" in capsys.readouterr().err
    assert params.read_text() == '{"iterations": 1}'
    weights = deeplab_run / "model.safetensors"
    before = weights.read_bytes()
    assert cli(["eval", "--model", str(deeplab_run), "--data-root", str(voc_tree),
                "--json", str(weights)]) == 1  # fmt: skip
    assert "--model weights file" in capsys.readouterr().err
    assert weights.read_bytes() == before


def test_predict_writes_pngs_and_resumes(deeplab_run, voc_tree, tmp_path, capsys):
    images = voc_tree / "VOCdevkit" / "VOC2012" / "JPEGImages"
    out = tmp_path / "pred"
    assert cli(["predict", "--model", str(deeplab_run), str(images), "--out", str(out),
                "--crf", "--save-probs"]) == 0  # fmt: skip
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 10 and len(list(out.glob("*.npy"))) == 10
    from deepcrf.data.io import read_label

    probs = np.load(out / f"{pngs[0].stem}.npy")
    np.testing.assert_array_equal(read_label(pngs[0]), probs.argmax(0))
    stamp = pngs[0].stat().st_mtime_ns
    assert cli(["predict", "--model", str(deeplab_run), str(images), "--out", str(out),
                "--crf", "--save-probs"]) == 0  # fmt: skip
    assert "(10 already done)" in capsys.readouterr().out
    assert pngs[0].stat().st_mtime_ns == stamp


def test_crf_models_keep_float32_under_autocast():
    torch.manual_seed(0)
    for name in ("crfasrnn", "joint_deeplab_crf"):
        model = build(name, 3, width=1 / 16).eval()
        x = torch.randn(1, 3, 24, 24)
        image = torch.rand(1, 3, 24, 24) * 255
        seen: dict = {}

        def hook(module, args, out, seen=seen):
            seen["dtype"] = out.dtype

        model.crf.register_forward_hook(hook)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, image)
        assert seen["dtype"] == torch.float32 and out.dtype == torch.float32, name
        with torch.no_grad():
            plain = model(x, image)
        assert (out - plain).abs().max().item() < 0.5  # bf16 CNN, float32 CRF: close


@pytest.mark.parametrize(
    "name, options",
    [
        ("fcn8s", {"width": 0.0625, "norm": "group", "dropout": 0.0}),
        ("deeplab_largefov", {"width": 0.125, "norm": "group", "dropout": 0.0}),
        ("crfasrnn", {"width": 0.0625, "norm": "group", "dropout": 0.0}),
    ],
)
def test_channels_last_input_changes_no_value_or_gradient(name, options):
    from deepcrf.recipes.predict import channels_last

    # float64: the two layouts sum in different orders, identical up to rounding
    torch.manual_seed(0)
    model = build(name, num_classes=4, **options).double()
    x = torch.randn(2, 3, 40, 48, dtype=torch.float64)
    raw = torch.rand(2, 3, 40, 48, dtype=torch.float64) * 255
    assert channels_last(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last(x), x)

    def run(inp):
        model.zero_grad()
        out = model(inp, raw) if getattr(model, "needs_image", False) else model(inp)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        (out * weights).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, plain_grads = run(x)
    fast, fast_grads = run(channels_last(x))
    torch.testing.assert_close(fast, plain, rtol=1e-9, atol=1e-9)
    assert len(fast_grads) == len(plain_grads) > 0
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9 * float(b.abs().max()))
    # the weights keep their layout: state dicts stay contiguous for safetensors
    assert all(p.is_contiguous() for p in model.state_dict().values())
