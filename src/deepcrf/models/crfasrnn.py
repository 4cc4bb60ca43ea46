"""CRF-as-RNN (Zheng et al., ICCV 2015): FCN-8s followed by a trainable dense CRF.

The CRF is ``deepcrf.nn.DenseCRF`` with CRF-as-RNN's choices by default: per-class kernel
weights, a learned (asymmetric) compatibility initialised to Potts, T = 5 mean-field
iterations in training and 10 at test, and the public prototxt's kernels (spatial 3 px,
weight 3; bilateral 160 px / 3 levels, weight 5: ``deepcrf.params.PRESETS["crfasrnn"]``).
``crf`` overrides any of these (keyword arguments of ``DenseCRF``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nn import DenseCRF
from ..params import PRESETS
from .fcn import FCN8s

__all__ = ["CRFasRNN", "crf_options"]


def crf_options(defaults: dict[str, Any], crf: dict[str, Any] | None) -> dict[str, Any]:
    """``DenseCRF`` keyword arguments: ``defaults`` updated by ``crf``; a CRFParams-style
    ``iterations`` (test-time iterations) is read as ``eval_iterations``."""
    options = dict(defaults)
    for key, value in (crf or {}).items():
        options["eval_iterations" if key == "iterations" else key] = value
    return options


def _crfasrnn_defaults() -> dict[str, Any]:
    params = PRESETS["crfasrnn"].to_dict()
    params.pop("iterations")
    return {
        **params,
        "iterations": 5,
        "eval_iterations": 10,
        "per_class_weights": True,
        "learn_compat": True,
    }


class CRFasRNN(nn.Module):
    """Logits (B, K, H, W) of FCN-8s refined by the dense CRF layer.

    ``forward(x, image)``: ``x`` the normalised network input, ``image`` the raw pixels
    (B, 3, H, W), values 0..255 (what the bilateral kernel compares).
    """

    output_stride = 1
    needs_image = True
    #: the unary network (what ``init=`` from an FCN-8s run and ImageNet weights load into)
    unary_attr = "fcn"

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        crf: dict[str, Any] | None = None,
        **fcn_options: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fcn = FCN8s(num_classes, width=width, **fcn_options)
        self.crf = DenseCRF(num_classes, **crf_options(_crfasrnn_defaults(), crf))

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.crf(self.fcn(x), image)
