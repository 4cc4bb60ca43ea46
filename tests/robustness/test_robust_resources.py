"""Caches bounded by bytes and thread-safe, clear_caches, bounded contextual graphs and
exact-filter chunks (issue 14, item 5)."""

from __future__ import annotations

import threading

import pytest
import torch

import deepcrf
from deepcrf.cache import ByteCache, nbytes
from deepcrf.exact import exact_filter
from deepcrf.features import _GRID_CACHE, grid_lattice


def test_byte_cache_evicts_least_recent_by_bytes():
    cache: ByteCache[torch.Tensor] = ByteCache("test", max_bytes=1000)
    cache.put("a", torch.zeros(100))  # 400 bytes
    cache.put("b", torch.zeros(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", torch.zeros(100))  # 1200 > 1000: b goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 800
    big = torch.zeros(1000)
    assert cache.put("big", big) is big and cache.get("big") is None  # never stored
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_nbytes_counts_shared_storage_once():
    t = torch.zeros(10)
    assert nbytes((t, t[2:], {"x": [t]})) == 40


def test_grid_lattice_cache_is_thread_safe_and_bounded(monkeypatch):
    monkeypatch.setattr(_GRID_CACHE, "max_bytes", 3 * nbytes(grid_lattice((30, 30), 3.0)))
    deepcrf.clear_caches()
    errors = []

    def work(seed: int) -> None:
        try:
            for i in range(12):
                size = 20 + (seed * 7 + i) % 9
                lattice = grid_lattice((size, size + 1), 3.0)
                assert lattice.num_points == size * (size + 1)
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _GRID_CACHE.bytes <= _GRID_CACHE.max_bytes
    deepcrf.clear_caches()
    assert len(_GRID_CACHE) == 0


def test_cached_models_still_deepcopy():
    import copy

    from deepcrf.models import build_contextual_crf

    model = build_contextual_crf(3, width=1 / 16, iterations=1)
    model.graph(6, 7, 1, torch.device("cpu"))
    assert len(model._graphs) == 1
    clone = copy.deepcopy(model)
    assert len(clone._graphs) == 0
    assert model._graphs.max_bytes < float("inf")


def test_exact_chunks_are_bounded_by_bytes(monkeypatch):
    import deepcrf.exact as exact

    seen = []
    original = torch.exp

    def spy(x, *args, **kwargs):
        seen.append(x.numel() * x.element_size())
        return original(x, *args, **kwargs)

    monkeypatch.setattr(exact, "CHUNK_BYTES", 40_000)
    monkeypatch.setattr(exact.torch, "exp", spy)
    f = torch.randn(500, 3, dtype=torch.float64)
    v = torch.randn(500, 2, dtype=torch.float64)
    out = exact_filter(f, v)
    monkeypatch.setattr(exact.torch, "exp", original)
    reference = torch.exp(-0.5 * torch.cdist(f, f) ** 2) @ v
    torch.testing.assert_close(out, reference)
    assert max(seen) <= 40_000


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
def test_release_memory_runs():
    from deepcrf.allocator import release_memory

    assert release_memory() in (True, False)


def test_small_refinements_keep_their_buffers():
    from deepcrf.allocator import RELEASE_ELEMENTS, release_after

    assert release_after(RELEASE_ELEMENTS - 1) is False
