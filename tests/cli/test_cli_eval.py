"""`deepcrf eval` end to end on a generated VOC tree, against an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepcrf.cli import main
from deepcrf.data import VOCSegmentation
from deepcrf.viz import save_label_png
from fake_trees import make_voc_tree

K = 21


def independent_scores(pairs, widths):
    """numpy/scipy reference: confusion via np.add.at, trimap via scipy's EDT."""
    ndimage = pytest.importorskip("scipy.ndimage")

    def scores(conf):
        tp = np.diag(conf).astype(np.float64)
        gt, pr = conf.sum(1), conf.sum(0)
        present = gt > 0
        iou = tp / np.maximum(gt + pr - tp, 1)
        return {
            "miou": iou[present].mean(),
            "pixel_acc": tp.sum() / conf.sum(),
            "mean_acc": (tp[present] / gt[present]).mean(),
            "fw_iou": (gt[present] / conf.sum() * iou[present]).sum(),
            "iou": iou,
            "present": present,
        }

    full = np.zeros((K, K), np.int64)
    tri = {w: np.zeros((K, K), np.int64) for w in widths}
    for pred, gt in pairs:
        valid = gt != 255
        np.add.at(full, (gt[valid], pred[valid]), 1)
        dist = ndimage.distance_transform_edt(gt != 255)
        for w in widths:
            sel = valid & (dist <= w)
            np.add.at(tri[w], (gt[sel], pred[sel]), 1)
    return scores(full), {w: scores(m) for w, m in tri.items()}, full


@pytest.fixture
def tree_with_predictions(tmp_path):
    names = [f"2009_{i:06d}" for i in range(4)]
    make_voc_tree(tmp_path / "voc", {"val": names}, size=(40, 50), k=K, seed=3)
    ds = VOCSegmentation(tmp_path / "voc", "val")
    rng = np.random.default_rng(7)
    pred_dir = tmp_path / "pred"
    pairs = []
    for i in range(len(ds)):
        s = ds[i]
        gt = s["label"].numpy()
        assert (gt == 255).any()  # the fixture draws void bands
        pred = np.where(gt == 255, rng.integers(0, K, gt.shape), gt)
        flip = rng.random(gt.shape) < 0.15
        pred[flip] = rng.integers(0, K, int(flip.sum()))
        if i == 0:  # a prediction copied from the gt may keep 255 on void pixels
            pred[gt == 255] = 255
        save_label_png(pred_dir / f"{s['name']}.png", pred)
        pairs.append((pred, gt))
    gt_dir = tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    return pred_dir, gt_dir, pairs


def test_eval_matches_independent_computation(tree_with_predictions, tmp_path, capsys):
    pred_dir, gt_dir, pairs = tree_with_predictions
    out = tmp_path / "res.json"
    plot = tmp_path / "tri.png"
    rc = main([
        "eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", str(K),
        "--trimap", "1,3,10", "--json", str(out), "--classes", "voc", "--plot", str(plot),
        "--quiet",
    ])  # fmt: skip
    assert rc == 0
    table = capsys.readouterr().out
    assert "mIoU" in table and "aeroplane" in table and "void rule" in table
    res = json.loads(out.read_text())
    ref, ref_tri, conf = independent_scores(pairs, [1, 3, 10])
    np.testing.assert_array_equal(np.array(res["confusion"]), conf)
    for key in ("miou", "pixel_acc", "mean_acc", "fw_iou"):
        assert res[key] == pytest.approx(ref[key], abs=1e-6)
        assert 0 <= res[key] <= 1
    for k, name in enumerate(res["classes"]):
        if ref["present"][k] or conf[:, k].sum():
            assert res["iou"][name] == pytest.approx(ref["iou"][k], abs=1e-6)
        else:
            assert res["iou"][name] is None
    assert set(res["trimap"]) == {"1", "3", "10"}
    for w in (1, 3, 10):
        assert res["trimap"][str(w)]["miou"] == pytest.approx(ref_tri[w]["miou"], abs=1e-6)
        assert res["trimap"][str(w)]["pixel_acc"] == pytest.approx(
            ref_tri[w]["pixel_acc"], abs=1e-6
        )
    assert res["trimap_rule"] == "void"
    assert plot.is_file() and plot.stat().st_size > 1000


def test_eval_accepts_voc_tree_and_split(tree_with_predictions, tmp_path):
    pred_dir, gt_dir, _ = tree_with_predictions
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    voc_root = gt_dir.parents[2]
    base = ["eval", "--pred", str(pred_dir), "--num-classes", str(K), "--quiet"]
    assert main([*base, "--gt", str(gt_dir), "--json", str(out_a)]) == 0
    assert main([*base, "--gt", str(voc_root), "--split", "val", "--json", str(out_b)]) == 0
    assert json.loads(out_a.read_text()) == json.loads(out_b.read_text())


def test_eval_errors_name_the_problem(tree_with_predictions, tmp_path, capsys):
    pred_dir, gt_dir, _ = tree_with_predictions
    base = ["eval", "--gt", str(gt_dir), "--num-classes", str(K), "--quiet"]
    # size mismatch
    bad = tmp_path / "bad"
    for p in pred_dir.iterdir():
        (bad / p.name).parent.mkdir(exist_ok=True)
        (bad / p.name).write_bytes(p.read_bytes())
    save_label_png(bad / "2009_000002.png", np.zeros((5, 5), np.int64))
    assert main([*base, "--pred", str(bad)]) == 1
    assert "2009_000002.png" in capsys.readouterr().err
    # gt value >= K that is not 255
    three = ["eval", "--gt", str(gt_dir), "--num-classes", "3", "--quiet"]
    assert main([*three, "--pred", str(pred_dir)]) == 1
    assert "not the ignore index" in capsys.readouterr().err
    # missing counterpart: an error with --strict, else a warning and the predicted subset
    (bad / "2009_000002.png").unlink()
    assert main([*base, "--pred", str(bad), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "no prediction" in err and "2009_000002" in err
    with pytest.warns(UserWarning, match="2009_000002"):
        assert main([*base, "--pred", str(bad), "--json", str(tmp_path / "sub.json")]) == 0
    assert json.loads((tmp_path / "sub.json").read_text())["num_images"] == len(list(bad.iterdir()))
    lst = tmp_path / "subset.txt"
    lst.write_text("2009_000000\n2009_000001\n")
    assert main([*base, "--pred", str(bad), "--list", str(lst)]) == 0
    # empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*base, "--pred", str(empty)]) == 1
    assert "no .png label maps" in capsys.readouterr().err
    # --classes with the wrong count
    assert main([*base, "--pred", str(pred_dir), "--classes", "cityscapes"]) == 1
    assert "--classes" in capsys.readouterr().err


def test_eval_never_writes_its_report_over_an_input(tree_with_predictions, tmp_path, capsys):
    """--json / --plot naming a label map of --pred or --gt, or the --list file, is refused
    before anything is written; a new report inside those folders is fine."""
    pred_dir, gt_dir, _ = tree_with_predictions
    base = ["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", str(K)]
    base.append("--quiet")
    lst = tmp_path / "subset.txt"
    lst.write_text("2009_000000\n2009_000001\n")
    for target, named in (
        (gt_dir / "2009_000001.png", "--gt"),
        (pred_dir / "2009_000003.png", "--pred"),
        (lst, "--list"),
    ):
        before = target.read_bytes()
        assert main([*base, "--list", str(lst), "--json", str(target)]) == 1
        err = capsys.readouterr().err
        assert "--json" in err and named in err
        assert target.read_bytes() == before
    report = pred_dir / "report.json"
    assert main([*base, "--json", str(report)]) == 0
    assert json.loads(report.read_text())["num_images"] == 4
    assert main([*base, "--json", str(report)]) == 0  # an earlier report may be replaced


def test_eval_boundary_fallback_on_real_samples(voc_samples, tmp_path):
    """The shared VOC photos have no void band: the trimap falls back to label boundaries."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    from deepcrf.data import read_label

    for _, lab_path in voc_samples:
        lab = read_label(lab_path)
        name = lab_path.stem.replace("_labels", "")
        save_label_png(gt_dir / f"{name}.png", lab)
        save_label_png(pred_dir / f"{name}.png", np.zeros_like(lab))
    out = tmp_path / "r.json"
    base = ["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", str(K)]
    assert main([*base, "--trimap", "2,20", "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["trimap_rule"] == "boundary"
    assert res["iou"]["0"] < 1 and res["trimap"]["2"]["pixel_acc"] < res["pixel_acc"]
