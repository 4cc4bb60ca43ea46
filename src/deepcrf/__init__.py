"""deepcrf: semantic segmentation with CNNs and dense Conditional Random Fields."""

from deepcrf.cache import clear_caches
from deepcrf.crf import Kernel, Pairwise, mean_field
from deepcrf.dense import refine, refine_labels

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
