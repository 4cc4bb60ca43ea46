"""Lin et al. (2016) contextual deep CRF networks: FeatMap-Net, Unary-Net, Pairwise-Net.

FeatMap-Net (paper Fig. 6-8): the image is resized to the scales 1.2, 0.8 and 0.4 (bilinear,
size round(s*H) x round(s*W)); each goes through the shared VGG-16 blocks 1-5 (2x2 / stride 2
pooling in ceil mode for pools 1-4; pool5 3x3 / stride 1 / pad 1, so output stride 16) followed
by the first fully connected layer of VGG-16 as a 7x7 convolution (4096, pad 3, ReLU) merged
into block 5, then a scale-specific Conv Block 6 (two 3x3 convs, 512, ReLU). The 0.8 and 0.4
maps are up-sampled bilinearly to the 1.2 map's size and the three are concatenated (F, 3 x 512
channels); 2-level sliding pyramid pooling (5x5 and 9x9 max pooling, stride 1, same size)
of F is concatenated to it: [F, pool5x5(F), pool9x9(F)], i.e. 512 x 3 per scale, 4608 in all.
Output: (B, 4608, ceil(round(1.2 H)/16), ceil(round(1.2 W)/16)) (160x160 -> 12x12).

Unary-Net: per node, FC 512 -> ReLU -> FC K, as 1x1 convolutions on a feature map (B, C, h, w)
or as linear layers on feature vectors (N, C). Pairwise-Net: the same on edge features (E, 2C)
(the two nodes' features concatenated, in edge order) -> (E, K*K); output index
``k = y_p * K + y_q`` (row-major, first node's label first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import POOL_INDICES, Pool, check_width, run_with_taps, scaled, vgg16_features

FEATMAP_POOLS = (Pool(2, 2, 0, ceil_mode=True),) * 4 + (Pool(3, 1, 1),)
SCALES = (1.2, 0.8, 0.4)
PYRAMID_WINDOWS = (5, 9)


def resize_to_scale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``image`` (B, C, H, W) resized bilinearly to round(scale*H) x round(scale*W) (>= 1)."""
    if scale == 1.0:
        return image
    h, w = (int(n) for n in image.shape[-2:])  # plain ints (constants under torch.jit.trace)
    size = (max(1, round(scale * h)), max(1, round(scale * w)))
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


class FeatMapNet(nn.Module):
    """Multi-scale feature map (B, out_channels, h, w) at stride 16 of the largest scale."""

    output_stride = 16
    imagenet_fc: ClassVar[dict[str, str]] = {"fc6": "classifier.0"}

    def __init__(
        self,
        width: float = 1.0,
        scales: Sequence[float] = SCALES,
        pyramid_windows: Sequence[int] = PYRAMID_WINDOWS,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        width = check_width(width)
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
        if any(k < 1 or k % 2 == 0 for k in pyramid_windows):
            raise ValueError(f"pyramid_windows must be odd sizes >= 1, got {pyramid_windows}")
        self.scales = tuple(float(s) for s in scales)
        self.pyramid_windows = tuple(int(k) for k in pyramid_windows)
        self.features = vgg16_features(width, FEATMAP_POOLS, (1,) * 5, 1, in_channels)
        c5, fc, c6 = scaled(512, width), scaled(4096, width), scaled(512, width)
        self.fc6 = nn.Conv2d(c5, fc, 7, padding=3)
        self.block6 = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(fc, c6, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(c6, c6, 3, padding=1),
                nn.ReLU(inplace=True),
            )
            for _ in self.scales
        )
        self.block_channels = c6
        self.out_channels = c6 * len(self.scales) * (1 + len(self.pyramid_windows))

    @property
    def output_scale(self) -> float:
        """Scale of the image whose stride-16 grid the output lives on (the largest)."""
        return max(self.scales)

    def trunk(self, image: torch.Tensor) -> torch.Tensor:
        """Shared blocks 1-5 including fc6 (7x7 conv, ReLU), at stride 16 of ``image``."""
        return F.relu(self.fc6(self.features(image)))

    def pool_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the five pooling layers of the shared trunk on ``image`` as given.

        Strides 2, 4, 8, 16, 16 of ``image``: the inputs of the refinement network.
        """
        return run_with_taps(self.features, image, POOL_INDICES)[1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        maps = [
            block(self.trunk(resize_to_scale(image, s)))
            for s, block in zip(self.scales, self.block6, strict=True)
        ]
        size = maps[self.scales.index(self.output_scale)].shape[-2:]
        maps = [
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        fused = torch.cat(maps, dim=1)
        pooled = [F.max_pool2d(fused, k, stride=1, padding=k // 2) for k in self.pyramid_windows]
        return torch.cat([fused, *pooled], dim=1)


class PointwiseMLP(nn.Module):
    """Two fully connected layers (hidden, ReLU, out) applied to every position independently.

    Parameters are 1x1 convolutions; input is either a map (B, C, h, w) or vectors (N, C).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels}")
        self.in_channels = in_channels
        self.fc1 = nn.Conv2d(in_channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}) or (B, {self.in_channels}, h, w), "
                f"got {tuple(x.shape)}"
            )
        if x.dim() == 4:
            return self.fc2(F.relu(self.fc1(x)))
        x = F.relu(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias))
        return F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias)


class UnaryNet(PointwiseMLP):
    """Unary-Net: node features (B, C, h, w) or (N, C) -> class scores (B, K, h, w) or (N, K)."""

    output_stride = 16  # it scores FeatMap-Net cells

    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0) -> None:
        super().__init__(in_channels, scaled(512, check_width(width)), num_classes)
        self.num_classes = num_classes


class PairwiseNet(PointwiseMLP):
    """Pairwise-Net: edge features (E, 2C) (or (B, 2C, E, 1)) -> (E, K*K), index y_p*K + y_q.

    Its first layer splits over the two nodes, ``W [f_p; f_q] + b = (W_p f_p + b) + W_q f_q``:
    ``project_nodes`` gives both products per node and ``score_edges`` the rest of the net, so
    ``deepcrf.contextual.pairwise_scores`` pays the C-wide products once per node, not per edge.
    """

    output_stride = 16

    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0) -> None:
        if in_channels % 2:
            raise ValueError(
                f"in_channels must be even (two node features concatenated), got {in_channels}"
            )
        super().__init__(in_channels, scaled(512, check_width(width)), num_classes**2)
        self.num_classes = num_classes

    def project_nodes(self, node_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_p f + b, W_q f)`` for node features (N, C = in_channels / 2), each (N, hidden)."""
        c = self.in_channels // 2
        if node_features.dim() != 2 or node_features.shape[1] != c:
            raise ValueError(f"expected node features (N, {c}), got {tuple(node_features.shape)}")
        hidden = self.fc1.weight.shape[0]
        # one GEMM for both products: rows [W_p; W_q] (2 hidden, C)
        weight = self.fc1.weight.view(hidden, 2, c).transpose(0, 1).reshape(2 * hidden, c)
        bias = torch.cat([self.fc1.bias, self.fc1.bias.new_zeros(hidden)])
        first, second = F.linear(node_features, weight, bias).split(hidden, dim=1)
        return first, second

    def score_edges(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (n, K*K) from the first layer's pre-activations (n, hidden)."""
        return F.linear(F.relu(hidden), self.fc2.weight.flatten(1), self.fc2.bias)
