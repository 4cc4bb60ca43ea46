"""Geometry of the range-box graph: counts, offsets, borders, asymmetry."""

from __future__ import annotations

import pytest
import torch

from deepcrf.contextual import RELATIONS, batch_edges, grid_offsets, range_box_edges


def neighbours(edges: torch.Tensor, node: int) -> list[int]:
    return edges[edges[:, 0] == node, 1].tolist()


@pytest.mark.parametrize("relation", RELATIONS)
def test_interior_node_of_30x40_map_has_24_distinct_neighbours(relation):
    h, w = 30, 40
    edges = range_box_edges(h, w, relation)
    assert edges.dtype == torch.int64 and edges.shape[1] == 2
    node = 20 * w + 20
    q = neighbours(edges, node)
    assert len(q) == 24 and len(set(q)) == 24 and node not in q
    dy = [n // w - 20 for n in q]
    dx = [n % w - 20 for n in q]
    side = 0.4 * min(h, w)  # 12 nodes
    assert all(abs(x) <= side / 2 for x in dx)
    if relation == "surrounding":
        assert all(abs(y) <= side / 2 for y in dy)
        assert sorted(set(dy)) == [-6, -3, 0, 3, 6]
    else:
        assert all(-side <= y <= 0 for y in dy)  # above the node, or level with it
        assert sorted(set(dy)) == [-12, -9, -6, -3, 0]
        assert sum(y < 0 for y in dy) == 20
    assert sorted(set(dx)) == [-6, -3, 0, 3, 6]


def test_offsets_hand_computed_for_small_box():
    # 10 x 10 map, box 0.4 -> side 4 nodes -> spacing 1: the 5 x 5 block around the node.
    off = grid_offsets(10, 10, "surrounding")
    expected = {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)} - {(0, 0)}
    assert {tuple(o) for o in off.tolist()} == expected
    # a box smaller than the grid still keeps unit spacing and 24 distinct offsets
    assert len({tuple(o) for o in grid_offsets(5, 5, "surrounding").tolist()}) == 24
    # 35 x 35 (the paper's map): side 14 -> spacing floor(3.5) = 3, inside the box
    assert grid_offsets(35, 35).abs().max() == 6


def test_borders_drop_outside_neighbours_and_counts_match_brute_force():
    h, w = 9, 13
    for relation in RELATIONS:
        edges = range_box_edges(h, w, relation, box=0.5, grid=5)
        off = grid_offsets(h, w, relation, box=0.5, grid=5).tolist()
        expected = set()
        for i in range(h):
            for j in range(w):
                for dy, dx in off:
                    if 0 <= i + dy < h and 0 <= j + dx < w:
                        expected.add((i * w + j, (i + dy) * w + j + dx))
        got = [tuple(e) for e in edges.tolist()]
        assert len(got) == len(set(got)) == len(expected)
        assert set(got) == expected
    # corner node (0, 0) of "above_below" has only its same-row neighbours to the right
    edges = range_box_edges(h, w, "above_below", box=0.5, grid=5)
    assert sorted(neighbours(edges, 0)) == [1, 2]  # side 4.5 -> spacing 1


def test_surrounding_is_symmetric_and_above_below_is_not():
    sur = {tuple(e) for e in range_box_edges(12, 12, "surrounding").tolist()}
    assert all((q, p) in sur for p, q in sur)
    ab = range_box_edges(12, 12, "above_below", box=0.5)
    p_row, q_row = ab[:, 0] // 12, ab[:, 1] // 12
    assert bool((q_row <= p_row).all())
    strictly_above = q_row < p_row
    reversed_pairs = {(q, p) for p, q in ab[strictly_above].tolist()}
    assert not reversed_pairs & {tuple(e) for e in ab.tolist()}


def test_tiny_maps_and_batching():
    assert range_box_edges(1, 1).shape == (0, 2)
    edges = range_box_edges(3, 4)
    batched = batch_edges(edges, 12, 3)
    assert batched.shape == (3 * edges.shape[0], 2)
    assert torch.equal(batched[edges.shape[0] :], torch.cat([edges + 12, edges + 24]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relation": "left"},
        {"box": 0.0},
        {"box": float("nan")},
        {"grid": 4},
        {"grid": 1},
        {"h": 0},
        {"w": 2.5},
    ],
)
def test_bad_arguments_are_named(kwargs):
    args = {"h": 10, "w": 10, **kwargs}
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        range_box_edges(**args)
