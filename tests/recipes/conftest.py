"""Small shared settings for the recipe tests: tiny models, tiny crops, a few steps."""

from __future__ import annotations

import pytest

from deepcrf.data import SyntheticScenes, write_voc_tree


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory):
    """A VOC tree of 10 synthetic scenes (48x48, void band; 8 train, 2 val), classes.txt."""
    root = tmp_path_factory.mktemp("voc")
    scenes = SyntheticScenes(10, size=(48, 48), seed=3, void_band=3)
    write_voc_tree(scenes, root, val_fraction=0.2)
    return root
