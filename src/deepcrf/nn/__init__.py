"""Trainable dense CRF layers (CRF-as-RNN, Zheng et al. 2015; Schwing & Urtasun 2015).

``DenseCRF`` unrolls the library's mean-field loop with learnable kernel weights,
compatibility and bandwidths; ``lattice_filter`` is its differentiable lattice filtering;
``two_stage_param_groups`` expresses the unary-then-joint training schedule.
"""

from deepcrf.nn.dense_crf import DenseCRF
from deepcrf.nn.filtering import lattice_filter
from deepcrf.nn.message import CRFMessage
from deepcrf.nn.schedule import two_stage_param_groups

__all__ = ["CRFMessage", "DenseCRF", "lattice_filter", "two_stage_param_groups"]
