"""Tiny stand-ins for the zoo's FeatMap-Net, Unary-Net and Pairwise-Net, for fast tests."""

from __future__ import annotations

import torch
from torch import nn

from deepcrf.contextual import ContextualCRF


class TinyFeatMap(nn.Module):
    """(B, 3, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int = 6, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=stride, padding=1)
        self.out_channels = channels
        self.output_stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


def pairwise_mlp(channels: int, k: int, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(), nn.Linear(hidden, k * k))


def tiny_model(
    k: int = 3, channels: int = 6, relations=("surrounding", "above_below"), seed: int = 0, **kw
) -> ContextualCRF:
    torch.manual_seed(seed)
    featmaps = [TinyFeatMap(channels) for _ in range(1 + len(relations))]
    unary = nn.Conv2d(channels, k, 1)
    pairwise = [pairwise_mlp(channels, k) for _ in relations]
    return ContextualCRF(featmaps, unary, pairwise, k, relations, box=0.5, **kw)
