"""The refinement network of Lin et al. (2016), Fig. 12: coarse 1/16 scores -> 1/2 scores.

Inputs: the outputs of the five pooling layers of the VGG trunk (strides 2, 4, 8, 16, 16 of the
image; see ``FeatMapNet.pool_features``; fewer for a FeatMap-Net with a shorter trunk) and the
coarse score map (K channels, any size). Each input goes through two 3x3 convolutions
(``branch_channels``, ReLU), is up-sampled bilinearly to the output grid and all are
concatenated; three convolutions follow (3x3 ``hidden_channels`` ReLU, 3x3 ``hidden_channels``
ReLU, 1x1 K). The paper gives the structure but not the widths; 64 and 256 are our choice.
The output grid is that of the stride-2 pooling map
(``output_stride=2``, PASCAL VOC) or the stride-4 one (``output_stride=4``, the paper's
Cityscapes setting): for an H x W image, ceil(H/2) x ceil(W/2) or ceil(H/4) x ceil(W/4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import check_width, pool_channels, scaled


def _two_convs(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class RefineNet(nn.Module):
    """``forward(pools, scores)`` -> refined scores (B, K, h, w) on the stride-2 (or 4) grid."""

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        feature_channels: Sequence[int] | None = None,
        branch_channels: int = 64,
        hidden_channels: int = 256,
        output_stride: int = 2,
    ) -> None:
        super().__init__()
        width = check_width(width)
        if output_stride not in (2, 4):
            raise ValueError(f"output_stride must be 2 or 4, got {output_stride}")
        if feature_channels is None:
            feature_channels = pool_channels(width)
        n = len(feature_channels)
        if not 1 <= n <= 5 or (output_stride == 4 and n < 2):
            raise ValueError(
                "feature_channels needs one entry per pooling output (pool1-5, or the first "
                f"ones for a shorter trunk; pool2 at least for output_stride 4), got "
                f"{feature_channels}"
            )
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.feature_channels = tuple(int(c) for c in feature_channels)
        b, h = scaled(branch_channels, width), scaled(hidden_channels, width)
        self.branches = nn.ModuleList(_two_convs(c, b) for c in self.feature_channels)
        self.score_branch = _two_convs(num_classes, b)
        self.head = nn.Sequential(
            nn.Conv2d((len(self.feature_channels) + 1) * b, h, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, num_classes, 1),
        )

    def forward(self, pools: Sequence[torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        if len(pools) != len(self.feature_channels):
            raise ValueError(
                f"pools must hold the {len(self.feature_channels)} pooling outputs, "
                f"got {len(pools)}"
            )
        if scores.dim() != 4 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"scores must be (B, {self.num_classes}, h, w), got {tuple(scores.shape)}"
            )
        size = pools[0 if self.output_stride == 2 else 1].shape[-2:]
        maps = [branch(p) for branch, p in zip(self.branches, pools, strict=True)]
        maps.append(self.score_branch(scores))
        maps = [
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return self.head(torch.cat(maps, dim=1))
