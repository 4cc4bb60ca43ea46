"""Shared fixtures: the real photos in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VOC_SAMPLES = SHARED / "data" / "voc-samples"


def voc_sample_paths() -> list[tuple[Path, Path]]:
    """(photo, label map) pairs of the shared VOC samples; empty when absent."""
    if not VOC_SAMPLES.is_dir():
        return []
    return [
        (p, p.with_name(p.stem + "_labels.png"))
        for p in sorted(VOC_SAMPLES.glob("*.png"))
        if not p.stem.endswith("_labels")
    ]


@pytest.fixture
def voc_samples() -> list[tuple[Path, Path]]:
    pairs = voc_sample_paths()
    if not pairs:
        pytest.skip("../shared/data/voc-samples is not present")
    return pairs


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
