"""Mean field with few labels: the grouped row normalisation, side-by-side runs reusing
the lattice's fused slice table, and the per-iteration range check that replaces the
message bound where none is known."""

from __future__ import annotations

import pytest
import torch

from deepcrf.crf import (
    Kernel,
    Pairwise,
    SideBySide,
    _normalize_in_place,
    mean_field,
    mean_field_step,
)


@pytest.mark.parametrize("labels", [1, 2, 3, 4, 5, 8, 9, 21])
@pytest.mark.parametrize("rows", [0, 1, 7, 12, 30, 1001])
def test_normalize_in_place_divides_each_row_by_its_own_sum(labels, rows):
    g = torch.Generator().manual_seed(rows * 31 + labels)
    q = torch.rand(rows, labels, generator=g, dtype=torch.float64) * 10 + 1e-3
    expected = q / q.sum(1, keepdim=True)
    out = _normalize_in_place(q)
    assert out is q  # in place
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=0)


def test_normalize_in_place_float32_rows_sum_to_one():
    q = torch.rand(4 * 999 + 2, 2) + 1e-3  # not a multiple of every group size
    _normalize_in_place(q)
    torch.testing.assert_close(q.sum(1), torch.ones(q.shape[0]), rtol=0, atol=2e-7)


def _two_runs(n: int = 400, labels: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = [torch.rand(n, 2, generator=g) * 6, torch.rand(n, 5, generator=g) * 4]
    kernels = [Kernel(features[0], 3.0), Kernel(features[1], 10.0)]
    unary = torch.randn(n, 2, labels, generator=g)  # point-major: (N*R, L) rows
    return kernels, unary.reshape(n * 2, labels), labels


@pytest.mark.parametrize("labels", [2, 3])  # 3: the last label derived (SideBySide)
def test_side_by_side_equals_separate_runs_and_keeps_the_slice_table(labels):
    kernels, unary, labels = _two_runs(labels=labels)
    side = SideBySide(Pairwise(kernels, 2 * labels), 2)
    lattice = side.pairwise._stack.stacked
    tables = []
    original = lattice._slice_cache.table_with

    def spy(add, num_vertices, width=None):
        table = original(add, num_vertices, width)
        tables.append(table)
        return table

    lattice._slice_cache.table_with = spy
    together = mean_field(unary, side, 5).view(-1, 2, labels)
    # filled once for the 5 iterations (a reduced run first filters all-ones once: m(1))
    assert len(tables) == 5 + (labels == 3) and all(t is tables[-1] for t in tables[-5:])
    for run in range(2):
        alone = mean_field(unary.view(-1, 2, labels)[:, run], Pairwise(kernels, labels), 5)
        torch.testing.assert_close(together[:, run], alone, rtol=1e-5, atol=1e-6)


def test_normalize_in_place_non_contiguous_rows():
    base = torch.rand(3, 10) + 1e-3
    q = base.t()  # (10, 3), not contiguous
    expected = q / q.sum(1, keepdim=True)
    torch.testing.assert_close(_normalize_in_place(q), expected)
    torch.testing.assert_close(base.t(), expected)  # in place, through the view


class _Unbounded:
    """A pairwise model with no message bound (as SideBySide and general pairwise tables)."""

    def __init__(self, pairwise):
        self.add_message = pairwise.add_message


def _softmax_reference(unary, pairwise, iterations):
    q = torch.softmax(unary, 1)
    for _ in range(iterations):
        q, _ = mean_field_step(unary, q, pairwise)
    return q


@pytest.mark.parametrize(
    ("weight", "shift"),
    [(3.0, 0.0), (10.0, -500.0), (400.0, 0.0)],  # plain; unaries far off; logits past +-80
)
def test_without_a_bound_each_iteration_is_checked_and_matches_softmax(weight, shift):
    kernels, unary, labels = _two_runs(seed=2)
    kernels = [Kernel(k.features, weight) for k in kernels]
    pairwise = Pairwise(kernels, labels)
    u = unary.view(-1, 2, labels)[:, 0].contiguous() * 3 + shift
    ours = mean_field(u, _Unbounded(pairwise), 6)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, _softmax_reference(u, pairwise, 6), rtol=1e-5, atol=2e-6)


def test_side_by_side_computes_no_message_bound():
    kernels, unary, labels = _two_runs(seed=4)
    side = SideBySide(Pairwise(kernels, 2 * labels), 2)
    q = mean_field(unary, side, 3)
    assert "message_bound" not in side.pairwise.__dict__  # the cached property never ran
    torch.testing.assert_close(q, _softmax_reference(unary, side, 3), rtol=1e-5, atol=2e-6)


def test_wide_side_by_side_runs_keep_the_message_bound():
    kernels, unary, _ = _two_runs(seed=5, labels=9)  # 2 x 9 = 18 channels
    side = SideBySide(Pairwise(kernels, 18), 2)
    assert side.message_bound == side.pairwise.message_bound > 0
    torch.testing.assert_close(
        mean_field(unary, side, 3), _softmax_reference(unary, side, 3), rtol=1e-5, atol=2e-6
    )
