"""Confusion matrix, scores and trimap against hand-computed values and independent code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.metrics import (
    ConfusionMatrix,
    TrimapConfusion,
    boundary_mask,
    confusion_matrix,
    scores_from_confusion,
    squared_distance_to,
    trimap_mask,
)


def reference_scores(conf: np.ndarray) -> dict:
    """Independent loop-based implementation of the documented definitions."""
    k = conf.shape[0]
    total = conf.sum()
    ious, accs, fw = [], [], 0.0
    for c in range(k):
        tp = conf[c, c]
        gt = conf[c, :].sum()
        pr = conf[:, c].sum()
        if gt > 0:
            iou = tp / (gt + pr - tp)
            ious.append(iou)
            accs.append(tp / gt)
            fw += gt / total * iou
    return {
        "pixel_acc": np.trace(conf) / total,
        "mean_acc": float(np.mean(accs)),
        "miou": float(np.mean(ious)),
        "fw_iou": fw,
    }


def reference_confusion(pred, gt, k, ignore=255):
    conf = np.zeros((k, k), dtype=np.int64)
    for p, g in zip(pred.ravel(), gt.ravel(), strict=True):
        if g != ignore:
            conf[g, p] += 1
    return conf


def test_hand_computed_example():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 1]])
    conf = confusion_matrix(pred, gt, 3)
    expected = np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    np.testing.assert_array_equal(conf.numpy(), expected)
    s = scores_from_confusion(conf)
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    # iou: class0 1/(2+1-1)=1/2, class1 2/(2+4-2)=1/2, class2 0/(1+0-0)=0
    assert s["iou"] == pytest.approx([0.5, 0.5, 0.0])
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["mean_acc"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["fw_iou"] == pytest.approx(2 / 5 * 0.5 + 2 / 5 * 0.5)
    assert s["gt_pixels"] == [2, 2, 1]


def test_absent_class_not_averaged_but_reported():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 2, 1, 1]])
    s = scores_from_confusion(confusion_matrix(pred, gt, 4))
    assert s["iou"][2] == 0.0  # predicted, never in gt
    assert s["iou"][3] is None  # neither
    assert s["acc"][2] is None
    assert s["miou"] == pytest.approx((0.5 + 1.0) / 2)


def test_random_against_reference():
    rng = np.random.default_rng(1)
    k = 6
    cm = ConfusionMatrix(k)
    total = np.zeros((k, k), dtype=np.int64)
    for _ in range(5):
        gt = rng.integers(0, k, size=(13, 9))
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, k, size=gt.shape))
        pred[pred == 255] = 0
        cm.update(torch.from_numpy(pred), gt)
        total += reference_confusion(pred, gt, k)
    np.testing.assert_array_equal(cm.mat.numpy(), total)
    got, ref = cm.scores(), reference_scores(total)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, abs=1e-12)


def test_merge_equals_single_pass():
    rng = np.random.default_rng(2)
    data = [(rng.integers(0, 4, (5, 5)), rng.integers(0, 4, (5, 5))) for _ in range(4)]
    one, a, b = ConfusionMatrix(4), ConfusionMatrix(4), ConfusionMatrix(4)
    for i, (p, g) in enumerate(data):
        one.update(p, g)
        (a if i % 2 else b).update(p, g)
    np.testing.assert_array_equal(a.merge(b).all_reduce().mat.numpy(), one.mat.numpy())
    with pytest.raises(ValueError, match="merge"):
        a.merge(ConfusionMatrix(5))


def test_bad_input_errors_name_the_file():
    with pytest.raises(ValueError, match=r"sizes differ in x\.png"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 3, name="x.png")
    with pytest.raises(ValueError, match=r"ground truth in y\.png has label values \[7\]"):
        confusion_matrix(np.zeros((2, 2), int), np.array([[0, 7], [255, 1]]), 3, name="y.png")
    with pytest.raises(ValueError, match=r"prediction has label values \[3\]"):
        confusion_matrix(np.array([[3]]), np.array([[0]]), 3)
    with pytest.raises(ValueError, match=r"prediction has label values \[255\]"):
        confusion_matrix(np.array([[255, 0]]), np.array([[1, 0]]), 3)
    # 255 (or anything) predicted on void pixels is never scored, so it is accepted
    conf = confusion_matrix(np.array([[255, 0]]), np.array([[255, 0]]), 3)
    assert int(conf.sum()) == 1 and int(conf[0, 0]) == 1
    with pytest.raises(TypeError):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 3)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_empty_scores_are_none():
    s = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert s["miou"] is None and s["pixel_acc"] is None and s["iou"] == [None] * 3


def brute_force_sq_distance(features: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(features)
    h, w = features.shape
    out = np.full((h, w), np.iinfo(np.int64).max)
    for y in range(h):
        for x in range(w):
            if len(ys):
                out[y, x] = ((ys - y) ** 2 + (xs - x) ** 2).min()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_transform_exact(seed):
    rng = np.random.default_rng(seed)
    f = rng.random((19, 27)) < 0.03
    f[3, 4] = True
    d2 = squared_distance_to(torch.from_numpy(f)).numpy()
    np.testing.assert_array_equal(d2, brute_force_sq_distance(f))


def test_distance_transform_matches_scipy_with_reach():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(5)
    f = rng.random((60, 80)) < 0.002
    f[30, 40] = True
    ref = ndimage.distance_transform_edt(~f)
    d = np.sqrt(squared_distance_to(f, max_distance=10).numpy().astype(np.float64))
    close = ref <= 10
    np.testing.assert_allclose(d[close], ref[close], atol=1e-12)
    assert (d[~close] > 10).all()
    full = np.sqrt(squared_distance_to(f).numpy().astype(np.float64))
    np.testing.assert_allclose(full, ref, atol=1e-12)


def test_trimap_void_rule_constructed():
    gt = np.zeros((7, 7), dtype=np.int64)
    gt[:, 3] = 255  # a vertical void band
    m1 = trimap_mask(gt, 1).numpy()
    expected = np.zeros((7, 7), bool)
    expected[:, [2, 4]] = True
    np.testing.assert_array_equal(m1, expected)
    m2 = trimap_mask(gt, 2).numpy()
    expected[:, [1, 5]] = True
    np.testing.assert_array_equal(m2, expected)
    # diagonal distance sqrt(2): a single void pixel, width 1.5 takes the 8-neighbourhood
    gt = np.zeros((5, 5), dtype=np.int64)
    gt[2, 2] = 255
    m = trimap_mask(gt, 1.5).numpy()
    assert m.sum() == 8 and not m[2, 2]
    assert trimap_mask(gt, 1).numpy().sum() == 4


def test_trimap_boundary_rule_constructed():
    gt = np.zeros((4, 6), dtype=np.int64)
    gt[:, 3:] = 1
    b = boundary_mask(gt).numpy()
    assert b[:, [2, 3]].all() and b.sum() == 8
    m = trimap_mask(gt, 1, mode="boundary").numpy()
    assert m[:, 1:5].all() and not m[:, [0, 5]].any()


def test_trimap_confusion_against_scipy_reference():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    k, widths = 4, [1, 3, 10]
    tc = TrimapConfusion(k, widths)
    ref = {w: np.zeros((k, k), np.int64) for w in widths}
    for _ in range(3):
        gt = np.zeros((30, 40), dtype=np.int64)
        gt[5:20, 8:30] = rng.integers(1, k)
        gt[rng.random(gt.shape) < 0.05] = 2
        band = ndimage.binary_dilation(gt == gt[10, 10]) & ~(gt == gt[10, 10])
        gt[band] = 255
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, k, gt.shape))
        pred[pred == 255] = 1
        tc.update(pred, gt)
        dist = ndimage.distance_transform_edt(gt != 255)
        for w in widths:
            sel = (gt != 255) & (dist <= w)
            ref[w] += reference_confusion(pred[sel], gt[sel], k)
    assert tc.rule == "void"
    for w, mat in tc.matrices().items():
        np.testing.assert_array_equal(mat.numpy(), ref[w])
        got, want = scores_from_confusion(mat), reference_scores(ref[w])
        assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)


def test_trimap_auto_falls_back_to_boundary_and_merges():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[:, 3:] = 1
    pred = np.zeros_like(gt)
    a = TrimapConfusion(2, [1]).update(pred, gt)
    assert a.rule == "boundary"
    expected = confusion_matrix(pred, gt, 2, mask=trimap_mask(gt, 1, mode="boundary"))
    np.testing.assert_array_equal(a.matrices()[1.0].numpy(), expected.numpy())
    gt_void = gt.copy()
    gt_void[:, 2] = 255
    b = TrimapConfusion(2, [1]).update(pred, gt_void)
    a.merge(b)
    assert a.rule == "void"
    expected = confusion_matrix(pred, gt_void, 2, mask=trimap_mask(gt_void, 1))
    np.testing.assert_array_equal(a.matrices()[1.0].numpy(), expected.numpy())
    with pytest.raises(ValueError, match="mode"):
        TrimapConfusion(2, [1], mode="x")
    with pytest.raises(ValueError, match="widths"):
        TrimapConfusion(2, [-1])


def test_all_reduce_in_a_process_group(tmp_path):
    """all_reduce really goes through torch.distributed (a one-process gloo group)."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        cm = ConfusionMatrix(3).update(np.array([[0, 1]]), np.array([[0, 2]]))
        before = cm.mat.clone()
        assert torch.equal(cm.all_reduce().mat, before)
        tc = TrimapConfusion(3, [1]).update(np.array([[0, 1]]), np.array([[255, 2]]))
        tc.all_reduce()
        assert tc.rule == "void" and int(tc.matrices()[1.0].sum()) == 1
    finally:
        dist.destroy_process_group()
