"""Joint CNN + dense CRF (Schwing & Urtasun 2015): DeepLab scores, bilinearly up-sampled to
the image inside the network, refined by a dense CRF at full resolution whose kernel weights
and 7 bandwidths (2 spatial, 2 + 3 bilateral) are learned (``learn_bandwidths``).

Stage 1 trains the DeepLab network alone (the ``deeplab`` recipe); stage 2 loads it into
``.cnn`` and trains both through 5 mean-field iterations (10 at test). The CRF starts from
``crf`` (keyword arguments of ``DenseCRF``; default DeepLab-LargeFOV's published values), so
that stage 2 starts exactly where "stage 1 + that CRF as post-processing" stands.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import DenseCRF
from ..params import CRFParams
from .deeplab import VARIANTS, build_deeplab

__all__ = ["JointDeepLabCRF"]


def _joint_defaults() -> dict[str, Any]:
    params = CRFParams().to_dict()
    params.pop("iterations")  # refine()'s iterations are the test-time ones here
    return {**params, "iterations": 5, "eval_iterations": 10, "learn_bandwidths": True}


class JointDeepLabCRF(nn.Module):
    """Logits (B, K, H, W) at full resolution: DeepLab ``variant`` + a learned dense CRF.

    ``forward(x, image)``: ``x`` normalised input, ``image`` raw pixels (B, 3, H, W), 0..255.
    """

    output_stride = 1
    needs_image = True
    #: the unary network (what ``init=`` from a stage-1 DeepLab run loads into)
    unary_attr = "cnn"

    def __init__(
        self,
        num_classes: int,
        variant: str = "deeplab_largefov",
        width: float = 1.0,
        crf: dict[str, Any] | None = None,
        **deeplab_options: Any,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
        self.num_classes = num_classes
        self.cnn = build_deeplab(variant, num_classes, width=width, **deeplab_options)
        if crf is not None and not isinstance(crf, dict):
            raise TypeError(f"crf: expected a dict of DenseCRF options, got {type(crf).__name__}")
        self.crf = DenseCRF(num_classes, **{**_joint_defaults(), **(crf or {})})

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        scores = self.cnn(x)
        scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.crf(scores, image)
