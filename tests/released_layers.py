"""Random-weight layer lists in the released models' layer names and (width-scaled) shapes.

Written from the papers' public configurations (RECIPES.md), not from deepcrf's models, so
the converters are checked against an independent statement of the published layouts. The
``EXPECTED_*`` tables say which deepcrf parameter each published blob must land in.
"""

from __future__ import annotations

import numpy as np

WIDTH = 1 / 16


def c(channels: int, width: float = WIDTH) -> int:
    """A channel count scaled like deepcrf's light models (round, at least 1)."""
    return max(1, round(channels * width))


#: (Caffe name, input channels, output channels) of VGG-16's convolutions
VGG = [
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512),
]  # fmt: skip
#: torchvision / deepcrf ``features`` index of each of them
VGG_INDEX = dict(zip([n for n, _, _ in VGG], (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def vgg(rng, width: float = WIDTH) -> list:
    out = []
    for name, cin, cout in VGG:
        cin = 3 if name == "conv1_1" else c(cin, width)
        out.append((name, [rand(rng, c(cout, width), cin, 3, 3), rand(rng, c(cout, width))]))
    return out


def expected_vgg(prefix: str = "") -> dict[tuple[str, int], str]:
    """(layer, blob index) -> deepcrf parameter for the VGG convolutions."""
    table = {}
    for name, index in VGG_INDEX.items():
        table[(name, 0)] = f"{prefix}features.{index}.weight"
        table[(name, 1)] = f"{prefix}features.{index}.bias"
    return table


def deeplab_largefov(rng, classes: int = 21, ip_fc: bool = False) -> list:
    """DeepLab-LargeFOV: fc6 [1024,512,3,3], fc7 [1024,1024,1,1], fc8_voc12 [K,1024,1,1]."""
    fc6 = rand(rng, c(1024), c(512), 3, 3)
    fc7 = rand(rng, c(1024), c(1024), 1, 1)
    if ip_fc:  # InnerProduct layout (before net surgery)
        fc6, fc7 = fc6.reshape(c(1024), -1), fc7.reshape(c(1024), -1)
    return [
        *vgg(rng),
        ("fc6", [fc6, rand(rng, c(1024))]),
        ("fc7", [fc7, rand(rng, c(1024))]),
        ("fc8_voc12", [rand(rng, classes, c(1024), 1, 1), rand(rng, classes)]),
    ]


def expected_deeplab(classifier: bool = True) -> dict[tuple[str, int], str]:
    table = expected_vgg()
    for layer in ("fc6", "fc7") + (("fc8_voc12",) if classifier else ()):
        module = "fc8" if layer == "fc8_voc12" else layer
        table[(layer, 0)], table[(layer, 1)] = f"{module}.weight", f"{module}.bias"
    return table


def fcn8s(rng, classes: int = 21, names: str = "crfasrnn") -> list:
    """FCN-8s in CRF-as-RNN's names (score2 with a bias) or the official FCN names."""
    k = classes
    crf = names == "crfasrnn"
    up2 = [rand(rng, k, k, 4, 4)] + ([rand(rng, k)] if crf else [])
    return [
        *vgg(rng),
        ("fc6", [rand(rng, c(4096), c(512), 7, 7), rand(rng, c(4096))]),
        ("fc7", [rand(rng, c(4096), c(4096), 1, 1), rand(rng, c(4096))]),
        ("score-fr" if crf else "score_fr", [rand(rng, k, c(4096), 1, 1), rand(rng, k)]),
        ("score2" if crf else "upscore2", up2),
        ("score-pool4" if crf else "score_pool4", [rand(rng, k, c(512), 1, 1), rand(rng, k)]),
        ("score4" if crf else "upscore_pool4", [rand(rng, k, k, 4, 4)]),
        ("score-pool3" if crf else "score_pool3", [rand(rng, k, c(256), 1, 1), rand(rng, k)]),
        ("upsample" if crf else "upscore8", [rand(rng, k, k, 16, 16)]),
    ]


def expected_fcn(prefix: str = "", names: str = "crfasrnn") -> dict[tuple[str, int], str]:
    table = expected_vgg(prefix)
    crf = names == "crfasrnn"
    pairs = [
        ("fc6", "fc6", True), ("fc7", "fc7", True),
        ("score-fr" if crf else "score_fr", "score_fr", True),
        ("score2" if crf else "upscore2", "upscore2", crf),
        ("score-pool4" if crf else "score_pool4", "score_pool4", True),
        ("score4" if crf else "upscore_pool4", "upscore_pool4", False),
        ("score-pool3" if crf else "score_pool3", "score_pool3", True),
        ("upsample" if crf else "upscore8", "upscore8", False),
    ]  # fmt: skip
    for layer, module, bias in pairs:
        table[(layer, 0)] = f"{prefix}{module}.weight"
        if bias:
            table[(layer, 1)] = f"{prefix}{module}.bias"
    return table


def crfasrnn(rng, classes: int = 21) -> list:
    """TVG_CRFRNN_COCO_VOC: FCN-8s + inference1's three [1,1,K,K] blobs."""
    crf = [rand(rng, 1, 1, classes, classes) for _ in range(3)]  # W_s, W_b, C
    return [*fcn8s(rng, classes), ("inference1", crf)]
