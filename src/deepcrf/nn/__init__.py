"""Trainable dense CRF layers (CRF-as-RNN, Zheng et al. 2015; Schwing & Urtasun 2015).

``DenseCRF`` unrolls the library's mean-field loop with learnable kernel weights,
compatibility and bandwidths; ``lattice_filter`` is its differentiable lattice filtering;
``two_stage_param_groups`` expresses the unary-then-joint training schedule;
``DenseCRFLoss`` is the DenseCRF regularised loss of weak supervision (Tang et al. 2018).

    crf = DenseCRF(21, learn_compat=True, per_class_weights=True, learn_bandwidths=True)
    logits = crf(cnn(normalised), raw_image)          # (B, 21, H, W), raw_image 0..255
    loss = F.cross_entropy(logits, target, ignore_index=255)
    plot_compatibility(crf.compatibility(), class_names, "mu.png")   # deepcrf.viz

The layer runs the library's one ``deepcrf.crf.Pairwise`` message and one
``deepcrf.crf.mean_field`` loop. Fixed bandwidths take the fast path (one stacked lattice
per batch, built once per forward; normalisation folded in; weights and compatibility
act on the lattice vertices; backward = one transposed filter). Learned bandwidths add
the Gaussian-derivative filtering of values times features (``deepcrf.kernel``; exact
with ``filter="exact"``, an approximation on the lattice).
"""

from deepcrf.kernel import lattice_filter
from deepcrf.nn.dense_crf import DenseCRF
from deepcrf.nn.loss import DenseCRFLoss
from deepcrf.nn.schedule import two_stage_param_groups

__all__ = ["DenseCRF", "DenseCRFLoss", "lattice_filter", "two_stage_param_groups"]
