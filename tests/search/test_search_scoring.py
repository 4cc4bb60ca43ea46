"""The shared-lattice scorer against the independent reference: refine() per point + eval's
confusion matrix, pixel for pixel."""

from __future__ import annotations

import numpy as np

from deepcrf.dense import refine
from deepcrf.metrics import confusion_matrix
from deepcrf.search.scoring import group_points, score_group


def _reference(point, samples, k):
    total = np.zeros((k, k), np.int64)
    for s in samples:
        pred = refine(s.probs, s.image, **point).argmax(0)
        total += confusion_matrix(pred, s.label, k).numpy()
    return total


def test_scorer_equals_refine_per_point(make_samples):
    samples = make_samples(3, size=(24, 30), seed=3)
    # weights, iterations (incl. 0 = no CRF, and a dropped kernel) and two bandwidth groups
    points = [
        dict(
            iterations=it,
            gaussian_sxy=3.0,
            gaussian_compat=w2,
            bilateral_sxy=sxy,
            bilateral_srgb=13.0,
            bilateral_compat=w1,
        )
        for sxy in (20.0, 60.0)
        for w1, w2, it in (
            (3.0, 3.0, 10),
            (10.0, 3.0, 10),
            (5.0, 0.0, 4),
            (0.0, 2.0, 7),
            (4.0, 3.0, 0),
        )
    ]
    groups = group_points(points)
    assert len(groups) == 2 and [len(ix) for _, ix in groups] == [5, 5]
    for group, indices in groups:
        confusions = score_group(group, samples, 5)
        for i, conf in zip(indices, confusions):
            np.testing.assert_array_equal(conf, _reference(points[i], samples, 5))


def test_scorer_batches_small_images_and_mixed_sizes(make_samples):
    samples = make_samples(3, size=(20, 24), seed=1) + make_samples(2, size=(26, 18), seed=2)
    point = dict(
        iterations=5,
        gaussian_sxy=3.0,
        gaussian_compat=3.0,
        bilateral_sxy=30.0,
        bilateral_srgb=8.0,
        bilateral_compat=6.0,
    )
    [(group, _)] = group_points([point])
    [conf] = score_group(group, samples, 5)
    np.testing.assert_array_equal(conf, _reference(point, samples, 5))
