"""VGG-16 trunk whose parameter names match torchvision's ``vgg16`` state dict.

Every model in the zoo keeps its VGG-16 convolutions in a ``features`` ``nn.Sequential`` laid out
exactly like torchvision's (conv / ReLU pairs, a pooling layer after each block), so the keys
``features.0.weight`` ... ``features.28.bias`` of an ImageNet checkpoint load by name. Models
differ only in the pooling layers (kernel, stride, padding) and the dilation of each block,
which hold no parameters. Inputs follow torchvision's convention: RGB scaled to [0, 1] and
normalised with ``IMAGENET_MEAN`` / ``IMAGENET_STD``.

``norm`` ("batch" or "group"; ``with_norm`` / ``norm_layer``) puts a normalisation layer after
every convolution, for thin trunks trained from scratch (without it a thin VGG-16 loses most
of its ReLUs in a short training). Such a trunk no longer has torchvision's indices (the pooling
layers move: ``pool_indices``), so ImageNet weights do not load into it. "group" (GroupNorm)
does not depend on the batch: processes of a DistributedDataParallel job compute the gradients
of one process with the whole batch, and evaluation behaves as training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Output channels of the convolutions of VGG-16 blocks 1-5.
BLOCK_CHANNELS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)

#: Indices in ``features`` of the pooling layer closing each block (torchvision layout).
POOL_INDICES: tuple[int, ...] = (4, 9, 16, 23, 30)

#: ``norm`` values: none, BatchNorm2d, GroupNorm
NORMS = (None, "batch", "group")
#: GroupNorm: at most this many groups (Wu & He's 32), each of at least ``GROUP_MIN_CHANNELS``
GROUP_MAX = 32
GROUP_MIN_CHANNELS = 4


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels`` multiplied by ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def check_width(width: float) -> float:
    """Validate the channel multiplier ``width`` (a positive number)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number (channel multiplier), got {width!r}")
    return float(width)


@dataclass(frozen=True)
class Pool:
    """Max-pooling closing one VGG block; ``ceil_mode`` as in ``nn.MaxPool2d``."""

    kernel: int = 2
    stride: int = 2
    padding: int = 0
    ceil_mode: bool = False

    def module(self) -> nn.MaxPool2d:
        return nn.MaxPool2d(self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)


#: torchvision / ImageNet VGG-16 pooling: 2x2, stride 2 (total stride 32).
IMAGENET_POOLS = (Pool(),) * 5


def vgg16_features(
    width: float = 1.0,
    pools: Sequence[Pool] = IMAGENET_POOLS,
    dilations: Sequence[int] = (1, 1, 1, 1, 1),
    first_padding: int = 1,
    in_channels: int = 3,
    norm: str | None = None,
) -> nn.Sequential:
    """VGG-16 blocks 1-5 as one ``nn.Sequential`` with torchvision's indices.

    ``pools`` gives the pooling of each block and ``dilations`` the dilation of each block's 3x3
    convolutions (padding = dilation, so they keep the spatial size). ``first_padding`` is the
    padding of the very first convolution (FCN-8s uses 100). ``norm`` adds a normalisation
    layer after every convolution (``with_norm``; the pooling layers then sit at
    ``pool_indices(features)``, not ``POOL_INDICES``).
    """
    check_norm(norm)
    width = check_width(width)
    if len(pools) != 5 or len(dilations) != 5:
        raise ValueError("pools and dilations must each give one entry per VGG block (5)")
    layers: list[nn.Module] = []
    channels = in_channels
    blocks = zip(BLOCK_CHANNELS, pools, dilations, strict=True)
    for block, (outs, pool, dilation) in enumerate(blocks):
        for i, out in enumerate(outs):
            out = scaled(out, width)
            padding = first_padding if (block == 0 and i == 0) else dilation
            layers += [
                nn.Conv2d(channels, out, 3, padding=padding, dilation=dilation),
                nn.ReLU(inplace=True),
            ]
            channels = out
        layers.append(pool.module())
    return with_norm(nn.Sequential(*layers), norm)


def check_norm(norm: str | None) -> str | None:
    """Validate ``norm`` (one of ``NORMS``)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: the most groups (<= ``GROUP_MAX``) dividing
    ``channels`` with at least ``GROUP_MIN_CHANNELS`` channels each (1 for thin layers)."""
    best = 1
    for groups in range(1, GROUP_MAX + 1):
        if channels % groups == 0 and channels // groups >= GROUP_MIN_CHANNELS:
            best = groups
    return best


def norm_layer(norm: str | None, channels: int) -> nn.Module:
    """The normalisation layer ``norm`` for ``channels`` (``nn.Identity`` for None)."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    return nn.Identity()


def pool_indices(features: nn.Sequential) -> tuple[int, ...]:
    """Indices of the pooling layers of a trunk (``POOL_INDICES`` without norm layers)."""
    return tuple(i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d))


def with_norm(features: nn.Sequential, norm: str | None) -> nn.Sequential:
    """``features`` with a ``norm`` layer after every convolution (before its ReLU); the
    same trunk when ``norm`` is None. The convolutions are the same modules."""
    if check_norm(norm) is None:
        return features
    layers: list[nn.Module] = []
    for layer in features:
        layers.append(layer)
        if isinstance(layer, nn.Conv2d):
            layers.append(norm_layer(norm, layer.out_channels))
    return nn.Sequential(*layers)


def features_out_channels(features: nn.Sequential) -> int:
    """Number of channels produced by a ``vgg16_features`` trunk."""
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def pool_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels of the five pooling outputs of a trunk built with ``width``."""
    return tuple(scaled(outs[-1], width) for outs in BLOCK_CHANNELS)


def run_with_taps(
    features: nn.Sequential, x: torch.Tensor, taps: Sequence[int] = POOL_INDICES
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``features`` on ``x``; also return the outputs of the layers at indices ``taps``."""
    wanted = set(taps)
    outputs = []
    for index, layer in enumerate(features):
        x = layer(x)
        if index in wanted:
            outputs.append(x)
    return x, outputs


class VGG16(nn.Module):
    """The ImageNet classifier itself, with torchvision's exact parameter names and shapes.

    Useful as the reference layout for ``load_imagenet_vgg16`` and for classification; the
    segmentation models reuse only its ``features`` layout.
    """

    output_stride = None  # a classifier: one score vector per image

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = vgg16_features(width)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        c5, fc = scaled(512, width), scaled(4096, width)
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 7 * 7, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, num_classes),
        )
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
