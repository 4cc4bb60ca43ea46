"""Keep large temporary buffers in the heap rather than in fresh memory maps (glibc).

glibc serves allocations above its mmap threshold (at most 32 MB by default) with a new
memory map each time and unmaps it on free, so the mean-field loop's per-iteration
(N, L) buffers on multi-megapixel images page-fault in anew on every iteration, which
more than doubles the time at 4 megapixels. Raising the mmap and trim thresholds keeps
freed buffers for reuse, as PyTorch's own GPU allocator does; it also spares the
second refinement of a process the faults glibc's adaptive threshold still takes
(VOC size: 171-190 ms -> 158-166 ms). Applied once, the first time deepcrf builds a
lattice; set ``DEEPCRF_TUNE_MALLOC=0`` to leave malloc alone.

The trim threshold is lower (``_TRIM``): once more than that is free at the top of the
heap glibc returns it, and ``release_after`` hands back every free page after a large
refinement (``release_memory()``, also called by ``deepcrf.clear_caches``), so a process
does not keep gigabytes resident after refining a large image (2 megapixels, 21 labels:
~120 MB resident afterwards, the grid-lattice cache, instead of 0.5-0.8 GB).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["RELEASE_ELEMENTS", "release_after", "release_memory", "tune_allocator"]

#: Refinements of at least this many pixel-label values (64 MB per float32 buffer, about
#: 0.8 megapixels at 21 labels) hand their freed buffers back to the OS when they return;
#: smaller ones keep them for the next call (the speed-up described above).
RELEASE_ELEMENTS = 1 << 24

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # buffers up to 1 GiB come from (and go back to) the heap
_TRIM = 256 << 20  # free memory above this at the heap's top goes back to the OS
_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once; returns whether they are raised."""
    if "tuned" in _state:
        return _state["tuned"]
    tuned = False
    if os.environ.get("DEEPCRF_TUNE_MALLOC", "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            mallopt = None
        if mallopt is not None:
            tuned = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(
                mallopt(_M_TRIM_THRESHOLD, _TRIM)
            )
    _state["tuned"] = tuned
    return tuned


def release_after(elements: int) -> bool:
    """``release_memory()`` after a refinement of ``elements`` pixel-label values when that
    is at least ``RELEASE_ELEMENTS``; returns whether memory was released."""
    if elements < RELEASE_ELEMENTS or not _state.get("tuned"):
        return False
    return release_memory()


def release_memory() -> bool:
    """Return free heap pages to the operating system (glibc ``malloc_trim``); returns
    whether anything was released (False where malloc is not glibc's)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(trim(0))
