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

Options for training from scratch on small images (the recipe's ``tiny`` preset; the paper's
values are the defaults): ``output_stride`` 8 or 4 turns pool4 (and pool3) into 3x3 / stride
1 pooling like pool5, so a small image still gives a graph of many nodes; ``fc6_kernel`` (7
in the paper) and ``fc6_channels`` (None: 4096 x width) set the size of fc6; ``norm`` ("batch" or
"group", ``deepcrf.models.vgg.norm_layer``) puts a normalisation layer after every
convolution of the trunk and of Conv Block 6 (a thin
VGG-16 without it loses most of its ReLUs in a short from-scratch training; such a trunk no
longer has torchvision's layout, so ImageNet weights do not load into it); ``blocks`` < 5
keeps only the first VGG-16 blocks (a trunk with a smaller receptive field;
``pool_features`` then gives ``blocks`` maps).

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

from .vgg import (
    BLOCK_CHANNELS,
    POOL_INDICES,
    Pool,
    check_norm,
    check_width,
    norm_layer,
    pool_indices,
    run_with_taps,
    scaled,
    vgg16_features,
    with_norm,
)

FEATMAP_POOLS = (Pool(2, 2, 0, ceil_mode=True),) * 4 + (Pool(3, 1, 1),)
OUTPUT_STRIDES = (4, 8, 16)
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
    """Multi-scale feature map (B, out_channels, h, w) at stride ``output_stride`` (16: the
    paper's) of the largest scale."""

    imagenet_fc: ClassVar[dict[str, str]] = {"fc6": "classifier.0"}

    def __init__(
        self,
        width: float = 1.0,
        scales: Sequence[float] = SCALES,
        pyramid_windows: Sequence[int] = PYRAMID_WINDOWS,
        in_channels: int = 3,
        output_stride: int = 16,
        fc6_kernel: int = 7,
        norm: str | None = None,
        blocks: int = 5,
        fc6_channels: int | None = None,
    ) -> None:
        super().__init__()
        width = check_width(width)
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
        if any(k < 1 or k % 2 == 0 for k in pyramid_windows):
            raise ValueError(f"pyramid_windows must be odd sizes >= 1, got {pyramid_windows}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}"
            )
        if isinstance(fc6_kernel, bool) or not isinstance(fc6_kernel, int) or fc6_kernel < 1:
            raise ValueError(f"fc6_kernel must be an odd int >= 1, got {fc6_kernel!r}")
        if fc6_kernel % 2 == 0:
            raise ValueError(f"fc6_kernel must be an odd int >= 1, got {fc6_kernel!r}")
        check_norm(norm)
        self.scales = tuple(float(s) for s in scales)
        self.pyramid_windows = tuple(int(k) for k in pyramid_windows)
        self.output_stride = output_stride
        self.norm = norm
        if isinstance(blocks, bool) or blocks not in (1, 2, 3, 4, 5):
            raise ValueError(f"blocks must be 1..5 (VGG-16 blocks in the trunk), got {blocks!r}")
        halvings = {16: 4, 8: 3, 4: 2}[output_stride]
        if blocks < halvings:
            raise ValueError(
                f"output_stride {output_stride} needs at least {halvings} blocks, got {blocks}"
            )
        pools = FEATMAP_POOLS[:halvings] + (FEATMAP_POOLS[-1],) * (5 - halvings)
        features = vgg16_features(width, pools, (1,) * 5, 1, in_channels)
        features = features[: POOL_INDICES[blocks - 1] + 1]
        self.features = with_norm(features, norm)
        self.pool_indices = pool_indices(self.features)
        self.blocks = blocks
        c5 = scaled(BLOCK_CHANNELS[blocks - 1][-1], width)
        if fc6_channels is not None and (
            isinstance(fc6_channels, bool) or not isinstance(fc6_channels, int) or fc6_channels < 1
        ):
            raise ValueError(f"fc6_channels must be a positive int or None, got {fc6_channels!r}")
        fc = scaled(4096, width) if fc6_channels is None else fc6_channels
        c6 = scaled(512, width)
        self.fc6 = nn.Conv2d(c5, fc, fc6_kernel, padding=fc6_kernel // 2)
        self.fc6_norm = norm_layer(norm, fc)
        self.block6 = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(fc, c6, 3, padding=1),
                norm_layer(norm, c6),
                nn.ReLU(inplace=True),
                nn.Conv2d(c6, c6, 3, padding=1),
                norm_layer(norm, c6),
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
        """Shared blocks 1-5 including fc6 (7x7 conv, ReLU), at ``output_stride`` of ``image``."""
        return F.relu(self.fc6_norm(self.fc6(self.features(image))))

    def pool_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the five pooling layers of the shared trunk on ``image`` as given.

        Strides 2, 4, 8, 16, 16 of ``image`` (at ``output_stride`` 16): the inputs of the
        refinement network.
        """
        return run_with_taps(self.features, image, self.pool_indices)[1]

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
        return torch.cat([fused, *sliding_max_pyramid(fused, self.pyramid_windows)], dim=1)


def sliding_max_pyramid(x: torch.Tensor, windows: Sequence[int]) -> list[torch.Tensor]:
    """``[F.max_pool2d(x, k, stride=1, padding=k // 2) for k in windows]`` for odd windows,
    computed faster with the same values.

    Each window is separable (a 1 x k then a k x 1 pooling), windows are built in increasing
    order, a window of k from the previous one of j by a further window of k - j + 1 (the
    max over j then over k - j + 1 consecutive positions is the max over k), and the pooling
    runs in channels-last layout, which the CPU kernels vectorise over channels: the 5 x 5
    and 9 x 9 pyramid of the FeatMap-Net, forward and backward, costs about 1/8 of the two
    plain 2-D poolings.
    """
    out: dict[int, torch.Tensor] = {}
    prev, done = x.contiguous(memory_format=torch.channels_last), 1
    for k in sorted(set(windows)):
        step = k - done + 1
        if step > 1:
            prev = F.max_pool2d(prev, (1, step), stride=1, padding=(0, step // 2))
            prev = F.max_pool2d(prev, (step, 1), stride=1, padding=(step // 2, 0))
        out[k], done = prev, k
    return [out[k].contiguous() for k in windows]


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

    def project_nodes(self, node_features: torch.Tensor) -> torch.Tensor:
        """(N, 2, hidden): ``[W_p f + b, W_q f]`` for node features (N, C = in_channels / 2)."""
        c = self.in_channels // 2
        if node_features.dim() != 2 or node_features.shape[1] != c:
            raise ValueError(f"expected node features (N, {c}), got {tuple(node_features.shape)}")
        hidden = self.fc1.weight.shape[0]
        # one GEMM for both products: rows [W_p; W_q] (2 hidden, C)
        weight = self.fc1.weight.view(hidden, 2, c).transpose(0, 1).reshape(2 * hidden, c)
        bias = torch.cat([self.fc1.bias, self.fc1.bias.new_zeros(hidden)])
        return F.linear(node_features, weight, bias).view(-1, 2, hidden)

    def score_edges(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (n, K*K) from the first layer's pre-activations (n, hidden), overwritten
        by their ReLU."""
        return F.linear(hidden.relu_(), self.fc2.weight.flatten(1), self.fc2.bias)
