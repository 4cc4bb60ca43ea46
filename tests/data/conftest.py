"""Fixtures for the data tests: small generated dataset trees."""

from __future__ import annotations

import pytest

from fake_trees import make_voc_tree


@pytest.fixture
def voc_tree(tmp_path):
    splits = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]}
    splits["trainval"] = splits["train"] + splits["val"]
    data = make_voc_tree(tmp_path, splits)
    return tmp_path, data
