"""The lattice build, entry by entry, against the loop reference: vertex set, barycentric
weights (bit-exact float32), splat entries and blur neighbours, on random, tied,
image-like, batched and wide features, in one chunk and in many."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import deepcrf.lattice as lattice_module
from deepcrf.features import bilateral_features
from deepcrf.lattice import build_lattice
from reference_lattice import reference_lattice_entries, reference_neighbours


def assert_matches_reference(features: np.ndarray, segments: list[int] | None = None) -> None:
    """``build_lattice(features, segments)`` is the reference lattice of each segment."""
    n, d = features.shape
    lattice = build_lattice(torch.from_numpy(features), segments)
    slice_index = lattice.slice_index.long().numpy()
    bounds = [0, n] if segments is None else segments
    key_of_vertex: dict[int, tuple] = {}
    bary = np.empty((n, d + 1), dtype=np.float32)
    tables = []
    for s, (a, b) in enumerate(itertools.pairwise(bounds)):
        table, offsets, weights = reference_lattice_entries(features[a:b])
        tables.append(table)
        bary[a:b] = weights
        keys = list(table)
        for p, r in itertools.product(range(b - a), range(d + 1)):
            key = (s, keys[offsets[p, r]])
            assert key_of_vertex.setdefault(int(slice_index[a + p, r]), key) == key
    # one vertex per reference key: the map from our vertex numbers is a bijection
    assert lattice.num_vertices == len(key_of_vertex) == sum(len(t) for t in tables)
    assert len(set(key_of_vertex.values())) == lattice.num_vertices
    # barycentric weights as the reference's, bit for bit, except that pydensecrf adds
    # the wrap-around term of vertex 0 in double and deepcrf in float32, rounding 1 - v
    # first: an error of at most one unit in the last place of 1.0
    splat = np.full((n, d + 1), np.nan, dtype=np.float32)
    entries = lattice.splat_index.long().numpy()
    counts = np.diff(np.append(lattice.splat_offsets.long().numpy(), entries.size))
    vertex_of_entry = np.repeat(np.arange(lattice.num_vertices), counts)
    corner = np.argmax(slice_index[entries] == vertex_of_entry[:, None], axis=1)
    splat[entries, corner] = lattice.splat_weight.numpy()
    np.testing.assert_array_equal(splat[:, 1:], bary[:, 1:])
    np.testing.assert_allclose(splat[:, 0], bary[:, 0], rtol=0, atol=np.spacing(np.float32(1)))
    alpha = 1.0 / (1.0 + 2.0 ** (-d))  # slice weights: alpha times the splat weights
    np.testing.assert_array_equal(lattice.slice_weight.numpy(), splat * np.float32(alpha))
    # splat entries: vertex by vertex, exactly the (point, weight) pairs of the slice
    offsets = np.append(lattice.splat_offsets.long().numpy(), lattice.splat_index.numel())
    ours = sorted(
        (v, int(p), float(w))
        for v in range(lattice.num_vertices)
        for p, w in zip(
            lattice.splat_index[offsets[v] : offsets[v + 1]].tolist(),
            lattice.splat_weight[offsets[v] : offsets[v + 1]].tolist(),
        )
    )
    expected = sorted(
        (int(slice_index[p, r]), p, float(splat[p, r]))
        for p, r in itertools.product(range(n), range(d + 1))
    )
    assert ours == expected
    # blur: [itself, down, up] along each axis, weight 1/2 where the neighbour exists
    index, weight = (t.numpy() for t in lattice.blur_stencils[0])
    vertex_of_key = {key: v for v, key in key_of_vertex.items()}
    for v, (s, key) in key_of_vertex.items():
        for axis in range(d + 1):
            for column, neighbour in zip((1, 2), reference_neighbours(key, axis)):
                found = neighbour in tables[s]
                assert index[axis, v, 0] == v and weight[axis, v, 0] == 1.0
                assert index[axis, v, column] == (vertex_of_key[(s, neighbour)] if found else v)
                assert weight[axis, v, column] == (0.5 if found else 0.0)


def _random(n: int, d: int, seed: int, spread: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32) * np.float32(spread)


def _image(h: int, w: int, seed: int, noise: float = 3.0) -> torch.Tensor:
    """A photo-like (h, w, 3) image: flat regions, edges, noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.float32)
    image[:, : w // 2] = (200, 40, 30)
    image[:, w // 2 :] = (20, 90, 180)
    image[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = (250, 250, 250)
    image += rng.normal(0, noise, image.shape).astype(np.float32)
    return torch.from_numpy(image)


def _image_features(seed: int) -> np.ndarray:
    """Bilateral features of a small photo-like image."""
    return bilateral_features(_image(14, 18, seed), 4.0, 13.0).numpy()


@pytest.fixture(params=["one chunk", "many chunks", "runs sorted"])
def chunking(request, monkeypatch):
    """The per-point stages in one chunk, or in chunks of a few points (the CPU path for
    large images); entries grouped by a sort of the entries, or of runs of equal codes
    (smooth images): none of it may change a bit of the lattice."""
    monkeypatch.setattr(lattice_module, "_RUNS_BELOW", 0.0)  # entries sorted
    threads = torch.get_num_threads()
    if request.param == "many chunks":  # chunks are for one thread
        monkeypatch.setattr(lattice_module, "_CHUNK_ENTRIES", 1)
        monkeypatch.setattr(lattice_module, "_MIN_CHUNK", 37)
        torch.set_num_threads(1)
    elif request.param == "runs sorted":
        monkeypatch.setattr(lattice_module, "_RUNS_BELOW", 2.0)
    yield request.param
    torch.set_num_threads(threads)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_random_features(chunking, d):
    assert_matches_reference(_random(150, d, seed=d))


def test_ties_on_simplex_boundaries(chunking):
    ys, xs = np.meshgrid(np.arange(9.0), np.arange(11.0), indexing="ij")
    features = (np.stack([xs.ravel(), ys.ravel()], 1) / 1.5).astype(np.float32)
    assert_matches_reference(features)


def test_image_features(chunking):
    assert_matches_reference(_image_features(0))


def test_batch_segments(chunking):
    features = np.concatenate([_image_features(1), _image_features(2)[:100], _random(90, 5, 3)])
    n1 = 14 * 18
    assert_matches_reference(features, [0, n1, n1 + 100, n1 + 190])


def test_wide_int64_codes(chunking):
    assert_matches_reference(_random(120, 6, seed=11, spread=100.0))


def test_keys_beyond_packed_codes(chunking, monkeypatch):
    monkeypatch.setattr(lattice_module, "_MAX_PACKED_BITS", 1)  # every key takes dense rows
    features = _random(120, 4, seed=5)
    features[60:] = features[:60] + _random(60, 4, seed=6, spread=0.5)
    assert_matches_reference(features, [0, 70, 120])


@pytest.mark.parametrize(
    ("setting", "value"), [("_CHUNK_ENTRIES", 1), ("_RUNS_BELOW", 2.0), ("_RUNS_BELOW", 0.0)]
)
def test_paths_change_no_bit(monkeypatch, setting, value):
    """Chunks, and runs or entries sorted, build bit-identical lattices (a grid image:
    long runs of equal codes, as in the flat regions of photos)."""
    features = bilateral_features(_image(40, 30, seed=4, noise=0.5), 8.0, 13.0)
    reduced, rank, _ = lattice_module._simplex_coordinates(features.t().contiguous())
    codes, _ = lattice_module._vertex_codes(reduced, rank, None)
    assert lattice_module._few_runs(codes.view(-1))  # the default takes the runs path
    whole = build_lattice(features)
    monkeypatch.setattr(lattice_module, "_MIN_CHUNK", 29)
    monkeypatch.setattr(lattice_module, setting, value)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chunks are for one thread
    try:
        other = build_lattice(features)
    finally:
        torch.set_num_threads(threads)
    for name in ("splat_index", "splat_offsets", "splat_weight", "slice_index", "slice_weight"):
        assert torch.equal(getattr(whole, name), getattr(other, name)), name
    for a, b in zip(whole.blur_stencils[0], other.blur_stencils[0]):
        assert torch.equal(a, b)


def test_run_estimate_picks_the_path():
    assert lattice_module._few_runs(torch.arange(100_000, dtype=torch.int32) // 10)
    assert not lattice_module._few_runs(torch.arange(100_000, dtype=torch.int32) // 2)
    assert lattice_module._few_runs(torch.zeros(5, dtype=torch.int32))  # fewer than a window


@pytest.mark.parametrize("runs_below", [0.0, 2.0])  # entries sorted / runs sorted
@pytest.mark.parametrize(
    "codes",
    [
        [7],
        [3, 3, 3, 3],
        [5, 1, 4, 2, 3],
        [2, 2, 9, 9, 9, 2, 2, 0, 9, 0, 0, 2],
        "random runs",
    ],
)
def test_group_entries_is_a_stable_sort(monkeypatch, runs_below, codes):
    """Both ways of grouping entries by vertex give the stable sort of the codes, their
    distinct values, each value's first position and each entry's value number."""
    monkeypatch.setattr(lattice_module, "_RUNS_BELOW", runs_below)
    if codes == "random runs":
        g = torch.Generator().manual_seed(0)
        values = torch.randint(-50, 50, (400,), generator=g, dtype=torch.int32)
        codes = torch.repeat_interleave(values, torch.randint(1, 6, (400,), generator=g))
    codes = torch.as_tensor(codes, dtype=torch.int32)
    order, vertex_codes, starts, vertex_of_entry = lattice_module._group_entries(
        codes, torch.int32
    )
    expected_codes, expected_order = torch.sort(codes.long(), stable=True)  # reference
    distinct, inverse = torch.unique(codes, return_inverse=True)
    assert torch.equal(order.long(), expected_order)
    assert torch.equal(vertex_codes, distinct)
    assert torch.equal(vertex_of_entry.long(), inverse)
    first = [int(torch.nonzero(expected_codes == v)[0]) for v in distinct.tolist()]
    assert starts.long().tolist() == first


@pytest.mark.parametrize("n", [5, 9_999, 10_000, 20_000, (1 << 15) - 1, 1 << 15])
def test_stable_sort_pads_mid_sizes_without_changing_the_order(monkeypatch, n):
    """Codes padded up to torch's radix-sort size (the path of codes too wide for numpy's
    keys) sort exactly as torch.sort sorts them, also with codes equal to the padding value
    and many ties."""
    monkeypatch.setattr(lattice_module, "_sorted_by_numpy", lambda codes: None)
    g = torch.Generator().manual_seed(n)
    codes = torch.randint(0, 50, (n,), generator=g, dtype=torch.int32)
    codes[::7] = torch.iinfo(torch.int32).max
    values, order = lattice_module._stable_sort(codes)
    expected_values, expected_order = torch.sort(codes.long(), stable=True)
    assert torch.equal(order, expected_order) and torch.equal(values.long(), expected_values)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("n", [1, 2, 1000, 70_000])
@pytest.mark.parametrize("spread", [3, 1 << 20, 1 << 30])
def test_stable_sort_by_numpy_keys_is_torchs_stable_sort(n, dtype, spread):
    """The CPU sort of (code - min, position) keys by numpy gives torch's stable sort:
    values and order, ties kept in entry order, negative codes, any spread of codes."""
    g = torch.Generator().manual_seed(n + spread)
    codes = torch.randint(-spread, spread, (n,), generator=g, dtype=dtype)
    found = lattice_module._sorted_by_numpy(codes)
    assert found is not None
    expected_values, expected_order = torch.sort(codes, stable=True)
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):  # numpy's sort on one thread, torch's parallel one on more
            torch.set_num_threads(threads)
            values, order = lattice_module._stable_sort(codes)
            assert values.dtype == dtype and order.dtype == torch.int64
            assert torch.equal(values, expected_values) and torch.equal(order, expected_order)
    finally:
        torch.set_num_threads(saved)
    values, order = found
    assert torch.equal(values, expected_values) and torch.equal(order, expected_order)


def test_stable_sort_falls_back_to_torch_for_codes_too_wide_for_keys():
    """Codes spanning more than 63 bits minus the positions' bits cannot be packed with
    their positions: torch sorts them (the same result)."""
    big = 1 << 61
    codes = torch.tensor([big, -big, 0, big, -big, 5], dtype=torch.int64)
    assert lattice_module._sorted_by_numpy(codes) is None
    values, order = lattice_module._stable_sort(codes)
    expected_values, expected_order = torch.sort(codes, stable=True)
    assert torch.equal(values, expected_values) and torch.equal(order, expected_order)
