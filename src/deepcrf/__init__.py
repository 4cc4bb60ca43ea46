"""deepcrf: semantic segmentation with CNNs and dense Conditional Random Fields."""

import gc as _gc

# Importing torch (below) creates millions of objects, and Python's cyclic garbage collector
# runs over them again and again while they are made: 0.3-0.4 CPU s of a ~2 s import. The
# collector is paused for the import (nothing made here is garbage) and restored after.
_collecting = _gc.isenabled()
_gc.disable()
try:
    from deepcrf.cache import clear_caches
    from deepcrf.crf import Kernel, Pairwise, mean_field
    from deepcrf.dense import refine, refine_labels
finally:
    if _collecting:
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
