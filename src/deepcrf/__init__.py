"""deepcrf: semantic segmentation with CNNs and dense Conditional Random Fields."""

import gc as _gc
import itertools as _itertools
import sys as _sys


def _started_as_command() -> bool:
    """Whether this process is the ``deepcrf`` command: its console script, or
    ``python -m deepcrf`` (while the package is imported for ``-m``, ``sys.argv[0]`` is
    "-m" and ``sys.orig_argv`` holds the command line)."""
    script = getattr(_sys.modules.get("__main__"), "__file__", None) or ""
    name = script.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("deepcrf", "deepcrf.exe", "deepcrf-script.py"):
        return True
    argv = list(getattr(_sys, "orig_argv", ()))
    return _sys.argv[:1] == ["-m"] and ("-m", "deepcrf") in _itertools.pairwise(argv)


# Importing torch (below) creates millions of objects, and Python's cyclic garbage collector
# runs over them again and again while they are made: 0.3-0.4 CPU s of a ~2 s import. The
# collector is paused for the import (nothing made here is garbage) and restored after.
# The ``deepcrf`` command owns its process and also freezes what the import made
# (``gc.freeze``): otherwise the first collections after it walk all of torch's ~170k
# objects again (two walks, 0.1-0.2 s), and every forked worker's collections would touch,
# and so copy, the parent's pages. A command with nothing to do started 0.28-0.38 s
# sooner. A library import leaves the collector as it found it (freezing would keep any
# cyclic garbage of the caller's existing objects forever).
_collecting = _gc.isenabled()
_gc.disable()
try:
    from deepcrf.cache import clear_caches
    from deepcrf.crf import Kernel, Pairwise, mean_field
    from deepcrf.dense import refine, refine_labels
finally:
    if _collecting:
        if _started_as_command():
            _gc.freeze()
        _gc.enable()
    del _collecting

__version__ = "0.1.0"
__all__ = [
    "Kernel",
    "Pairwise",
    "__version__",
    "clear_caches",
    "mean_field",
    "refine",
    "refine_labels",
]
