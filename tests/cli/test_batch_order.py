"""run_batch's ``order``: the items to do are handed out sorted by a key, outputs unchanged;
pseudo-label orders by image size read from the header."""

from __future__ import annotations

import numpy as np
from PIL import Image

from deepcrf.cli.batch import BatchItem, run_batch
from deepcrf.cli.pseudo_label import image_size
from deepcrf.fileio import atomic_write_text

SEEN: list[str] = []


def _work(item: BatchItem) -> None:
    SEEN.append(item.name)
    atomic_write_text(item.output, item.name)


def _items(folder, names):
    return [BatchItem(n, (), folder / f"{n}.txt") for n in names]


def test_items_run_in_the_order_of_the_key_and_skipped_ones_stay_skipped(tmp_path):
    names = ["a", "b", "c", "d", "e"]
    rank = {"a": 3, "b": 1, "c": 2, "d": 1, "e": 0}
    (tmp_path / "c.txt").write_text("c")  # done before: not redone
    SEEN.clear()
    summary = run_batch(
        _items(tmp_path, names), _work, show=False, order=lambda item: rank[item.name]
    )
    assert SEEN == ["e", "b", "d", "a"]  # by key; b before d (stable)
    assert summary.done == 4 and summary.skipped == 1
    assert {p.stem: p.read_text() for p in tmp_path.glob("*.txt")} == {n: n for n in names}


def test_without_a_key_the_given_order_is_kept(tmp_path):
    SEEN.clear()
    run_batch(_items(tmp_path, ["z", "x", "y"]), _work, show=False)
    assert SEEN == ["z", "x", "y"]


def test_image_size_reads_the_header_and_tolerates_unreadable_files(tmp_path):
    Image.fromarray(np.zeros((7, 11, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    assert image_size(BatchItem("a", (tmp_path / "a.npy", tmp_path / "a.jpg"), tmp_path)) == (
        11,
        7,
    )
    assert image_size(BatchItem("b", (tmp_path / "b.npy", tmp_path / "b.jpg"), tmp_path)) == (0, 0)
    missing = BatchItem("c", (tmp_path / "c.npy", tmp_path / "c.jpg"), tmp_path)
    assert image_size(missing) == (0, 0)
