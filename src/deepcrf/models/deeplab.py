"""DeepLab v1 (Chen et al., ICLR 2015): atrous VGG-16, scores at output stride 8.

Trunk: VGG-16 with pools 1-3 3x3 / stride 2 / pad 1, pools 4-5 3x3 / stride 1 / pad 1 and the
conv5 block dilated by 2. Head: fc6 (kernel k, dilation = the paper's "input stride"), fc7 (1x1),
both with ReLU and dropout 0.5, and the classifier fc8 (1x1, ``num_classes``). The fc6 variants
of the paper's Table 2:

=================  ======  ============  ========  =================
name               kernel  input stride  channels  parameters (K=21)
=================  ======  ============  ========  =================
deeplab_7x7        7x7     4             4096      134.35M
deeplab            4x4     4             4096      65.14M
deeplab_4x4        4x4     8             4096      65.14M
deeplab_largefov   3x3     12            1024      20.51M
=================  ======  ============  ========  =================

fc6 is padded by dilation*(kernel-1)/2 on each side, so the head keeps the spatial size.

Output size: every 3x3 / stride 2 / pad 1 pooling maps n to ceil(n/2), hence an HxW input gives
ceil(H/8) x ceil(W/8) scores (161x161 -> 21x21; 513x513 -> 65x65, as DeepLab's (n-1)/8+1).

``deeplab_msc*`` adds the multi-scale head: a two-layer MLP (128 3x3 convs then 128 1x1 convs,
ReLU after each) on the input image and on the outputs of pool1-pool4, its 3x3 layer strided by
8, 4, 2, 1, 1 respectively so that all five land on the stride-8 grid. The 5 x 128 = 640
channels are concatenated to fc7's output and fc8 classifies the concatenation. (A linear
classifier on a concatenation equals the sum of per-branch classifiers, which is how a Caffe
net would express it, so both readings of the paper give the same function family.) The paper
trains only these new weights on top of a trained DeepLab: see ``DeepLab.msc_parameters``.

``norm`` ("batch" or "group", see ``deepcrf.models.vgg``) puts a normalisation layer after
every convolution of the VGG trunk and after fc6 and fc7 (not in the MSc branches): for thin
networks trained from scratch (the ``tiny`` preset uses "group", which keeps
DistributedDataParallel's gradients those of one process with the whole batch); the trunk then
no longer takes ImageNet weights.

``pool5a=True`` adds the public LargeFOV configuration's 3x3 / stride 1 / pad 1 average pooling
between pool5 and fc6 (Caffe counts the padding, as ``nn.AvgPool2d`` does); the converted
released weights use it, models trained here do not need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .vgg import (
    Pool,
    check_norm,
    norm_layer,
    pool_channels,
    pool_indices,
    run_with_taps,
    scaled,
    vgg16_features,
)


@dataclass(frozen=True)
class Fc6Spec:
    """fc6 of one DeepLab variant: kernel size, dilation (input stride), channels of fc6/fc7."""

    kernel: int
    dilation: int
    channels: int


VARIANTS: dict[str, Fc6Spec] = {
    "deeplab_7x7": Fc6Spec(kernel=7, dilation=4, channels=4096),
    "deeplab": Fc6Spec(kernel=4, dilation=4, channels=4096),
    "deeplab_4x4": Fc6Spec(kernel=4, dilation=8, channels=4096),
    "deeplab_largefov": Fc6Spec(kernel=3, dilation=12, channels=1024),
}

DEEPLAB_POOLS = (
    Pool(3, 2, 1),
    Pool(3, 2, 1),
    Pool(3, 2, 1),
    Pool(3, 1, 1),
    Pool(3, 1, 1),
)
DEEPLAB_DILATIONS = (1, 1, 1, 1, 2)

#: Stride of each multi-scale branch (input, pool1..pool4) to reach output stride 8.
MSC_STRIDES = (8, 4, 2, 1, 1)
MSC_CHANNELS = 128


def _msc_branch(in_channels: int, channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1),
        nn.ReLU(inplace=True),
    )


class DeepLab(nn.Module):
    """DeepLab v1 scores (B, num_classes, ceil(H/8), ceil(W/8)) for images (B, 3, H, W)."""

    output_stride = 8
    #: fc layers initialised from torchvision's ImageNet classifier by ``load_imagenet_vgg16``.
    imagenet_fc: ClassVar[dict[str, str]] = {"fc6": "classifier.0", "fc7": "classifier.3"}

    def __init__(
        self,
        num_classes: int,
        spec: Fc6Spec,
        msc: bool = False,
        width: float = 1.0,
        dropout: float = 0.5,
        in_channels: int = 3,
        pool5a: bool = False,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if (spec.dilation * (spec.kernel - 1)) % 2:
            raise ValueError(f"fc6 {spec} cannot keep the spatial size with symmetric padding")
        self.num_classes = num_classes
        self.spec = spec
        self.msc = msc
        self.norm = check_norm(norm)
        self.features = vgg16_features(
            width, DEEPLAB_POOLS, DEEPLAB_DILATIONS, 1, in_channels, norm=norm
        )
        #: indices in ``features`` of pool1-pool4 (the MSc branches' inputs)
        self.taps = pool_indices(self.features)[:4]
        #: the public LargeFOV net's extra 3x3 / stride 1 / pad 1 average pooling before fc6
        #: (no parameters; set by the converter of the released weights)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1) if pool5a else None
        c5, fc = scaled(512, width), scaled(spec.channels, width)
        pad = spec.dilation * (spec.kernel - 1) // 2
        self.fc6 = nn.Conv2d(c5, fc, spec.kernel, padding=pad, dilation=spec.dilation)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc6_norm = norm_layer(norm, fc)
        self.fc7_norm = norm_layer(norm, fc)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        head_in = fc
        if msc:
            mc = scaled(MSC_CHANNELS, width)
            sources = (in_channels, *pool_channels(width)[:4])
            self.msc_branches = nn.ModuleList(
                _msc_branch(c, mc, s) for c, s in zip(sources, MSC_STRIDES, strict=True)
            )
            head_in += 5 * mc
        self.fc8 = nn.Conv2d(head_in, num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x
        x, pools = run_with_taps(self.features, x, self.taps)
        if self.pool5a is not None:
            x = self.pool5a(x)
        x = self.drop6(self.relu(self.fc6_norm(self.fc6(x))))
        x = self.drop7(self.relu(self.fc7_norm(self.fc7(x))))
        if self.msc:
            extra = [b(s) for b, s in zip(self.msc_branches, [image, *pools], strict=True)]
            x = torch.cat([x, *extra], dim=1)
        return self.fc8(x)

    def msc_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the paper trains for the MSc variant: the MLP branches and fc8."""
        if not self.msc:
            raise ValueError("msc_parameters() is only defined for the deeplab_msc* variants")
        yield from self.msc_branches.parameters()
        yield from self.fc8.parameters()


def build_deeplab(
    variant: str,
    num_classes: int,
    msc: bool = False,
    width: float = 1.0,
    fc6_dilation: int | None = None,
    **options,
) -> DeepLab:
    """DeepLab v1 variant ``variant`` (a key of ``VARIANTS``), optionally with the MSc head.

    ``fc6_dilation`` replaces the variant's fc6 dilation: LargeFOV's 12 spans 3/10 of the
    40x40 score map of a 321-pixel crop; small crops keep that field of view with a smaller
    one (e.g. 3 for 80-pixel crops, whose maps are 10x10).
    """
    spec = VARIANTS[variant]
    if fc6_dilation is not None:
        if not isinstance(fc6_dilation, int) or fc6_dilation < 1:
            raise ValueError(f"fc6_dilation: expected an integer >= 1, got {fc6_dilation!r}")
        spec = dataclasses.replace(spec, dilation=fc6_dilation)
    return DeepLab(num_classes, spec, msc=msc, width=width, **options)
