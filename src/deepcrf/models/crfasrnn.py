"""CRF-as-RNN (Zheng et al., ICCV 2015): FCN-8s scores refined by a trainable dense CRF.

``CRFasRNN(num_classes)`` = ``.fcn`` (:class:`deepcrf.models.fcn.FCN8s`, full-resolution
scores) followed by ``.crf`` (:class:`deepcrf.nn.DenseCRF`, mean field unrolled as an RNN).
The CRF's defaults are the paper's public prototxt: 5 iterations in training and 10 at test,
a learnable full compatibility (initialised to Potts), per-class kernel weights, bilateral
kernel θα = 160, θβ = 3 with weight 5, spatial kernel θγ = 3 with weight 3. The ``crf`` dict
overrides any :class:`~deepcrf.nn.DenseCRF` keyword (e.g. ``{"normalization": "after"}``).

The model needs the raw image for the bilateral kernel: ``forward(x, image)`` takes the
normalised network input ``x`` and the 0..255 pixels ``image`` of the same size; the class
attribute ``needs_image`` tells callers (training loop, predict, eval) to pass it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from deepcrf.nn import DenseCRF

from .fcn import FCN8s

#: DenseCRF keywords of CRF-as-RNN (public prototxt / RECIPES.md); ``crf`` overrides them.
CRFASRNN_DEFAULTS: dict[str, Any] = {
    "iterations": 5,
    "eval_iterations": 10,
    "learn_compat": True,
    "per_class_weights": True,
    "bilateral_sxy": 160.0,
    "bilateral_srgb": 3.0,
    "bilateral_compat": 5.0,
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
}


class CRFasRNN(nn.Module):
    """FCN-8s + trainable dense CRF: logits (B, K, H, W) for images (B, 3, H, W)."""

    output_stride = 1
    #: forward needs the raw 0..255 image besides the normalised input
    needs_image: ClassVar[bool] = True
    #: the unary network (where ``init=`` from an FCN-8s run and ImageNet weights load)
    unary_attr: ClassVar[str] = "fcn"

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        crf: dict[str, Any] | None = None,
        **fcn_options: Any,
    ) -> None:
        super().__init__()
        if crf is not None and not isinstance(crf, dict):
            raise TypeError(f"crf: expected a dict of DenseCRF options, got {type(crf).__name__}")
        if crf and "num_classes" in crf:
            raise ValueError("crf: num_classes is the model's, not a CRF option")
        self.num_classes = num_classes
        self.fcn = FCN8s(num_classes, width=width, **fcn_options)
        self.crf = DenseCRF(num_classes, **{**CRFASRNN_DEFAULTS, **(crf or {})})

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Refined logits for the normalised input ``x`` and raw pixels ``image`` (0..255)."""
        if image is None:
            raise ValueError(
                "CRFasRNN.forward: image is required: pass the raw 0..255 pixels "
                "(B, 3, H, W) besides the normalised input (the bilateral kernel needs them)"
            )
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise ValueError(f"CRFasRNN.forward: image: expected (B, 3, H, W), got {shape}")
        if image.shape[0] != x.shape[0] or image.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"CRFasRNN.forward: image {tuple(image.shape)} does not match the input "
                f"{tuple(x.shape)} (same batch and spatial size expected)"
            )
        scores = self.fcn(x)
        return self.crf(scores, image.to(scores.device))
