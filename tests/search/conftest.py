"""Small generated scenes with coarse network-like probabilities, for the search tests."""

from __future__ import annotations

import numpy as np
import pytest

from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.search import Sample


def scene_samples(n: int, size=(32, 40), seed: int = 0, num_classes: int = 5) -> list[Sample]:
    scenes = SyntheticScenes(n, size=size, seed=seed, num_classes=num_classes, normalize=None)
    out = []
    for i in range(n):
        image, label = scenes.generate(i)
        probs = coarse_probabilities(label, num_classes, stride=8, noise=1.0, seed=seed * 100 + i)
        out.append(Sample(f"s{seed}_{i:02d}", image, probs.astype(np.float32), label))
    return out


@pytest.fixture
def make_samples():
    return scene_samples
