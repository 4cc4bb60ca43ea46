"""Contextual deep CRF of Lin et al. (2016): CNN pairwise potentials on a range-box graph.

* :func:`range_box_edges` — the sampled range-box graph ("surrounding", "above_below");
* :func:`pairwise_scores` / :func:`edge_features` — chunked Pairwise-Net evaluation;
* :func:`mean_field` — parallel mean field with asymmetric K x K tables;
* :func:`piecewise_nll` — the piecewise training objective (eq. 11-14);
* :func:`downsample_labels` — ground truth at feature-map resolution (majority vote);
* :class:`ContextualCRF` — FeatMap-Nets + Unary-Net + Pairwise-Nets tied together;
* :func:`asynchronous_step` — one SGD step with the asynchronous update of §8.2.
"""

from .features import edge_features, pairwise_scores
from .graph import RELATIONS, batch_edges, grid_offsets, range_box_edges
from .inference import mean_field
from .labels import downsample_labels
from .model import ContextualCRF, Potentials
from .piecewise import piecewise_nll
from .training import AsyncStepResult, asynchronous_step

__all__ = [
    "RELATIONS",
    "AsyncStepResult",
    "ContextualCRF",
    "Potentials",
    "asynchronous_step",
    "batch_edges",
    "downsample_labels",
    "edge_features",
    "grid_offsets",
    "mean_field",
    "pairwise_scores",
    "piecewise_nll",
    "range_box_edges",
]
