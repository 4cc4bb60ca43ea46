"""run_batch's ``order``: the items to do are handed out sorted by a key, outputs unchanged;
pseudo-label orders by image size read from the header, and with ``cost`` lays the groups
out for both ends of the pool (``ends_evenly``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deepcrf.cli.batch import BatchItem, ends_evenly, run_batch
from deepcrf.cli.pseudo_label import image_size, work_cost
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


def _costly(names_costs: dict[str, tuple[str, float]]):
    items = [BatchItem(n, (), Path(f"{n}.txt")) for n in names_costs]
    return items, (lambda item: names_costs[item.name][0]), (lambda item: names_costs[item.name][1])


def test_ends_evenly_puts_costly_groups_at_both_ends_and_keeps_groups_together():
    # groups by size; mean costs: big 10, mid 5, small 1, tiny 0.5
    spec = {
        "b1": ("big", 9.0),
        "b2": ("big", 11.0),
        "m1": ("mid", 5.0),
        "m2": ("mid", 6.0),
        "m3": ("mid", 4.0),
        "s1": ("small", 1.0),
        "t1": ("tiny", 0.5),
        "t2": ("tiny", 0.5),
    }
    items, group, cost = _costly(spec)
    laid = [item.name for item in ends_evenly(items, group, cost)]
    # front: big (costliest first), small; back (taken from the end): mid, tiny
    assert laid == ["b2", "b1", "s1", "t2", "t1", "m3", "m1", "m2"]  # t1 taken first (back)
    assert sorted(laid) == sorted(spec)  # nothing lost or repeated
    assert laid[::-1][:3] == ["m2", "m1", "m3"]  # the back end also starts large


def test_run_batch_with_a_cost_hands_out_the_even_ending_layout(tmp_path):
    rank = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 2}
    weight = {"a": 1.0, "b": 3.0, "c": 9.0, "d": 8.0, "e": 2.0}
    SEEN.clear()
    run_batch(
        _items(tmp_path, list(rank)),
        _work,
        show=False,
        order=lambda item: rank[item.name],
        cost=lambda item: weight[item.name],
    )
    # one process (jobs 1) runs the list front to back: groups by mean cost c/d (8.5),
    # a/b (2) at the back end, e (2) after c/d: [c, d, e] + reversed([b, a])
    assert SEEN == ["c", "d", "e", "a", "b"]
    assert {p.stem: p.read_text() for p in tmp_path.glob("*.txt")} == {n: n for n in rank}


def test_work_cost_counts_pixels_and_cam_values(tmp_path):
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(tmp_path / "a.jpg")
    np.save(tmp_path / "a.npy", np.zeros((2, 10, 20), np.float32))
    item = BatchItem("a", (tmp_path / "a.npy", tmp_path / "a.jpg"), tmp_path / "a.png")
    header = (tmp_path / "a.npy").stat().st_size / 4 - 2 * 10 * 20
    assert work_cost(item) == 200 + 400 + header
    missing = BatchItem("b", (tmp_path / "b.npy", tmp_path / "b.jpg"), tmp_path / "b.png")
    assert work_cost(missing) == 0.0
