"""Choose the dense CRF's parameters from data (``deepcrf crf-search``).

* ``grid_search``: DeepLab's coarse-to-fine cross-validation (or any grid) scored by the mIoU
  of the refined predictions, probabilities computed once, work over processes, resumable;
* ``fit``: gradient descent on the cross-entropy of the mean-field marginals through
  ``deepcrf.nn.DenseCRF`` (bandwidths, weights, optionally per-class weights and a
  compatibility matrix).

Both return refine() keyword arguments (``deepcrf.params.CRFParams``'s JSON), usable as
``--crf-params`` by every CRF command. Layering: above dense/nn/metrics, below recipes.
"""

from deepcrf.search.grid import COARSE_GRID, DEEPLAB_BASE, expand_grid, fine_grid, load_grid
from deepcrf.search.runner import COARSE_TO_FINE, SearchResult, grid_search, select_best
from deepcrf.search.samples import Sample, SampleFiles, folder_samples, take_first

__all__ = [
    "COARSE_GRID",
    "COARSE_TO_FINE",
    "DEEPLAB_BASE",
    "Sample",
    "SampleFiles",
    "SearchResult",
    "expand_grid",
    "fine_grid",
    "folder_samples",
    "grid_search",
    "load_grid",
    "select_best",
    "take_first",
]
