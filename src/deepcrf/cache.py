"""Bounded, thread-safe caches of derived tensors (grid lattices, graphs) and ``clear_caches``.

Every cache of the library is a ``ByteCache``: least recently used entries are dropped
once the entries together hold more than ``max_bytes`` (tensor storage counted through
dataclasses, tuples, lists and dicts), an entry larger than the whole budget is returned
without being stored, and all bookkeeping happens under a lock, so threads sharing a
cache never see a half-updated one. The default budget per cache is
``DEFAULT_CACHE_BYTES`` (``DEEPCRF_CACHE_BYTES`` overrides it, e.g. ``256M``; ``0``
disables caching). ``clear_caches()`` empties every cache and hands freed memory back
to the operating system.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import torch

__all__ = ["DEFAULT_CACHE_BYTES", "ByteCache", "clear_caches", "nbytes"]

DEFAULT_CACHE_BYTES = 256 << 20  # a 4 MP grid lattice fits; a big tile's is not kept
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_REGISTRY: weakref.WeakSet[ByteCache] = weakref.WeakSet()

V = TypeVar("V")


def _default_budget() -> int:
    raw = os.environ.get("DEEPCRF_CACHE_BYTES", "").strip().upper().rstrip("B")
    if not raw:
        return DEFAULT_CACHE_BYTES
    unit = _UNITS.get(raw[-1], 1)
    number = raw[:-1] if raw[-1] in _UNITS else raw
    try:
        return max(0, int(float(number) * unit))
    except ValueError as exc:
        raise ValueError(f"DEEPCRF_CACHE_BYTES: expected a size like 256M, got {raw!r}") from exc


def nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes of tensor storage reachable from ``value`` (each storage counted once)."""
    seen = set() if _seen is None else _seen
    if isinstance(value, torch.Tensor):
        if value.is_sparse:
            return nbytes(value._indices(), seen) + nbytes(value._values(), seen)
        storage = value.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return int(storage.nbytes())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v, seen) for v in value)
    return 0


class ByteCache(Generic[V]):
    """An LRU cache bounded by the bytes of its entries; safe to share between threads."""

    def __init__(self, name: str, max_bytes: int | None = None) -> None:
        self.name = name
        self.max_bytes = _default_budget() if max_bytes is None else int(max_bytes)
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        _REGISTRY.add(self)

    def __reduce__(self):  # copies and pickles start empty (a lock cannot be copied)
        return (type(self), (self.name, self.max_bytes))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes currently held."""
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> V | None:
        """The entry for ``key`` (marked most recently used), or None."""
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V) -> V:
        """Store ``value`` (unless it alone exceeds the budget), evicting old entries."""
        size = nbytes(value)
        if size > self.max_bytes:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    def get_or_create(self, key: Hashable, create: Callable[[], V]) -> V:
        """The cached entry, or ``create()`` stored under ``key`` (built outside the lock:
        two threads may both build it; one result is kept)."""
        value = self.get(key)
        if value is None:
            value = self.put(key, create())
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def clear_caches() -> None:
    """Empty every deepcrf cache and return freed memory to the OS (CPU heap and CUDA)."""
    for cache in list(_REGISTRY):
        cache.clear()
    from deepcrf.allocator import release_memory

    release_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
