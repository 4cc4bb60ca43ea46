"""normalize() modes recorded by converted models: {"mode": ..., "mean": ..., "std": ...}."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.data.transforms import CAFFE_BGR_MEAN, normalize

RAW = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_caffe_mean_dict():
    mean = [104.007, 116.669, 122.679]
    got = normalize(RAW, {"mode": "caffe", "mean": mean})
    bgr = torch.from_numpy(RAW[:, :, ::-1].astype(np.float64).copy()).permute(2, 0, 1)
    want = (bgr - torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)).float()
    torch.testing.assert_close(got, want)
    assert torch.equal(normalize(RAW, {"mode": "caffe"}), normalize(RAW, "caffe"))
    assert torch.equal(
        normalize(RAW, {"mode": "caffe", "mean": list(CAFFE_BGR_MEAN)}), normalize(RAW, "caffe")
    )


def test_imagenet_dict():
    assert torch.equal(normalize(RAW, {"mode": "imagenet"}), normalize(RAW, "imagenet"))
    got = normalize(RAW, {"mode": "imagenet", "mean": [0.5] * 3, "std": [0.25] * 3})
    want = (torch.from_numpy(RAW).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "mode",
    [
        {"mode": "bgr"},
        {"mean": [1, 2, 3]},
        {"mode": "caffe", "mean": [1, 2]},
        {"mode": "caffe", "mean": "abc"},
        {"mode": "caffe", "std": [1, 1, 1]},
        {"mode": "imagenet", "std": [1, 0, 1]},
        {"mode": "caffe", "scale": 2},
    ],
)
def test_bad_modes(mode):
    with pytest.raises(ValueError, match="normalize"):
        normalize(RAW, mode)
