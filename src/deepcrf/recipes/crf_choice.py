"""Choose the post-processing CRF's parameters of a run on its own training images.

DeepLab chose its CRF parameters by cross-validation on held-out images (``deepcrf
crf-search``); published values were chosen for VOC's 500-pixel photos and a full-width
VGG-16, and they can over-smooth the small, unsure predictions of a tiny network on small
images. With ``crf_search.images`` > 0 a run ends by scoring a grid of CRF parameters
(``deepcrf.search.grid_search``, the same scoring as ``crf-search``) on the network's
probabilities for the first images of ``crf_search.split`` (default: the training split,
whole images, no augmentation: the run never sees the evaluation split) and carries the
best point as its ``crf`` section: what ``eval --crf`` / ``predict --crf`` apply and what a
CRF-as-RNN or joint stage 2 started from this run (``init=``) starts its CRF from.

``crf_search.grid`` names the refine() parameters to search and their values; empty, it is
``SMALL_IMAGE_GRID`` (w2, w1, σα, σβ on ranges that fit small images and weak networks;
36 points). The other parameters come from the run's ``crf`` section, with
``crf_search.iterations``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..params import CRFParams
from .config import Config
from .predict import iterate_dataset, model_probabilities

__all__ = ["SMALL_IMAGE_GRID", "choose_crf", "save_report"]

#: DeepLab's protocol fixes the smoothness kernel (w2 = 3, σγ = 3), but on the soft, fragmented
#: scores of a tiny stride-8 network that kernel alone erodes small objects (FCN-8s on the
#: shapes scenes of ``benchmarks/_shapes_voc.py``: -3 mIoU on its training images at every
#: w1), so w2 is searched too, and the weights go down to values that only nudge soft scores;
#: bandwidths fit 100-500 pixel images. σγ and the iterations come from ``base``.
SMALL_IMAGE_GRID: dict[str, list[float]] = {
    "gaussian_compat": [0.0, 1.0, 3.0],
    "bilateral_compat": [0.5, 2.0, 6.0],
    "bilateral_sxy": [10.0, 40.0],
    "bilateral_srgb": [4.0, 12.0],
}


def choose_crf(
    model: nn.Module, dataset, config: Config, device: torch.device | str = "cpu"
) -> tuple[CRFParams, dict]:
    """The best CRF parameters of ``config.crf_search``'s grid on the first
    ``config.crf_search.images`` images of ``dataset`` (mIoU of the refined predictions),
    and the search's JSON report (best, baseline = no CRF, every point)."""
    from ..search import Sample, grid_search

    spec = config.crf_search
    grid = dict(spec.grid) if spec.grid else SMALL_IMAGE_GRID
    base = CRFParams.from_dict({**config.crf, "iterations": spec.iterations}, source="crf")
    count = min(spec.images, len(dataset))
    samples = []
    for name, raw, label in iterate_dataset(dataset, range(count)):
        if label is None:
            raise ValueError(f"crf_search: image {name} has no label to score the CRF on")
        probs = model_probabilities(model, raw, device)
        samples.append(Sample(str(name), raw, probs, np.asarray(label)))
    result = grid_search(samples, grid, base=base, jobs=1)
    best = CRFParams.from_dict(result.best, source="crf_search best")
    report = result.to_json()
    report["split"] = spec.split or config.data.train_split
    return best, report


def save_report(report: dict, path: Path) -> Path:
    """Write a search report (``RUN/crf_search.json``) atomically."""
    import json

    from ..fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=1) + "\n")
