"""FCN-8s (Long et al., CVPR 2015), the CNN part of CRF-as-RNN: full-resolution scores.

The standard VGG-16 FCN-8s: conv1_1 padded by 100, 2x2 / stride 2 pooling in Caffe's ceil mode,
fc6 as a 7x7 convolution without padding, fc7 1x1 (both 4096, ReLU, dropout 0.5), ``score_fr``;
a 2x up-sampling fused with ``score_pool4`` (cropped at offset 5), another 2x up-sampling fused
with ``score_pool3`` (offset 9), and an 8x up-sampling cropped at offset 31 to exactly H x W.
The offsets are those of the Caffe reference net; with the 100-pixel padding the crops are
valid for every input size H, W >= 1 (checked in the tests). The up-sampling layers are
transposed convolutions initialised to bilinear interpolation (class-diagonal) and learnable;
the score layers start at zero, as in the reference. ``upscore2_bias=True`` gives the first
up-sampling a bias (zero at start), as in the CRF-as-RNN release (``score2``), for converted
weights; the other two never have one. ``norm`` ("batch" or "group", see
``deepcrf.models.vgg``) puts a normalisation layer after every convolution of the VGG trunk
and after fc6 and fc7: for thin networks trained from scratch (the ``tiny`` preset); the trunk
then no longer takes ImageNet weights.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .vgg import Pool, check_norm, norm_layer, pool_indices, run_with_taps, scaled, vgg16_features

FCN_POOLS = (Pool(2, 2, 0, ceil_mode=True),) * 5
PAD = 100
#: Crop offsets of score_pool4, score_pool3 and the final scores (Caffe reference net).
OFFSET_POOL4, OFFSET_POOL3, OFFSET_OUT = 5, 9, 31


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """ConvTranspose2d weight (C, C, k, k) that up-samples each channel bilinearly."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel, dtype=torch.float64)
    idx = torch.arange(channels)
    weight[idx, idx] = torch.outer(ramp, ramp)
    return weight.float()


def _upsampler(channels: int, kernel: int, stride: int, bias: bool = False) -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(channels, channels, kernel, stride=stride, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, kernel))
        if bias:
            layer.bias.zero_()
    return layer


def _crop(x: torch.Tensor, offset: int, like_h: int, like_w: int) -> torch.Tensor:
    return x[:, :, offset : offset + like_h, offset : offset + like_w]


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FCN8s(nn.Module):
    """Scores (B, num_classes, H, W) for images (B, 3, H, W)."""

    output_stride = 1
    imagenet_fc: ClassVar[dict[str, str]] = {"fc6": "classifier.0", "fc7": "classifier.3"}

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        dropout: float = 0.5,
        upscore2_bias: bool = False,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = check_norm(norm)
        self.features = vgg16_features(width, FCN_POOLS, (1,) * 5, first_padding=PAD, norm=norm)
        #: indices in ``features`` of pool3 and pool4 (the skip connections)
        self.taps = pool_indices(self.features)[2:4]
        c3, c4, c5 = scaled(256, width), scaled(512, width), scaled(512, width)
        fc = scaled(4096, width)
        self.fc6 = nn.Conv2d(c5, fc, 7)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc6_norm = norm_layer(norm, fc)
        self.fc7_norm = norm_layer(norm, fc)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        self.score_fr = _zero_conv(fc, num_classes)
        self.score_pool4 = _zero_conv(c4, num_classes)
        self.score_pool3 = _zero_conv(c3, num_classes)
        # the released CRF-as-RNN net's first up-sampling ("score2") has a bias
        self.upscore2 = _upsampler(num_classes, 4, 2, bias=upscore2_bias)
        self.upscore_pool4 = _upsampler(num_classes, 4, 2)
        self.upscore8 = _upsampler(num_classes, 16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x, (pool3, pool4) = run_with_taps(self.features, x, self.taps)
        x = self.drop6(self.relu(self.fc6_norm(self.fc6(x))))
        x = self.drop7(self.relu(self.fc7_norm(self.fc7(x))))
        up = self.upscore2(self.score_fr(x))
        h, w = up.shape[-2:]
        up = self.upscore_pool4(up + _crop(self.score_pool4(pool4), OFFSET_POOL4, h, w))
        h, w = up.shape[-2:]
        up = self.upscore8(up + _crop(self.score_pool3(pool3), OFFSET_POOL3, h, w))
        return _crop(up, OFFSET_OUT, height, width)
