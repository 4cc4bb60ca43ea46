"""The mapping tables of the released models: which source layer fills which deepcrf parameter.

One function per ``deepcrf convert --arch``; each takes the source's layer shapes (name ->
blob shapes, file order) and the class count, and returns the deepcrf model to fill, its rules
and the input convention to record (``model.config["normalize"]``).

====================  ===========================================  ============================
arch                  source                                       deepcrf model
====================  ===========================================  ============================
deeplab_largefov      DeepLab-LargeFOV caffemodel                  deeplab_largefov (pool5a)
deeplab               any DeepLab v1 caffemodel (fc6 7x7/4x4/3x3)  deeplab_7x7 / deeplab / ...
deeplab_msc_largefov  DeepLab-MSc(-LargeFOV) caffemodel           deeplab_msc_* by fc6
vgg16_init            vgg16_20M / vgg16_128 (ImageNet init)        deeplab_* by fc6, fc8 random
fcn8s                 FCN-8s caffemodel (either naming)            fcn8s
crfasrnn              TVG_CRFRNN_COCO_VOC.caffemodel               crfasrnn (full CRF weights)
crfasrnn_pytorch      crfasrnn_pytorch's crfasrnn_weights.pth      crfasrnn
====================  ===========================================  ============================

Conventions carried over:

* Caffe's convolution and deconvolution weights have PyTorch's layouts ((out, in, k, k) and
  (in, out, k, k)); legacy InnerProduct fc6 / fc7 are reshaped (see ``convert_rules``).
* DeepLab-MSc's five branches each end in their own 128 -> K classifier whose scores are
  summed with fc8's; deepcrf concatenates the 5 x 128 branch features to fc7's and applies
  one fc8, so each branch classifier becomes a column block of fc8 and all biases add up.
  The branch layers are recognised by shape (their 3x3 layer's input channels say which
  source they read: image 3, pool1 64, pool2 128, pool3 256, pool4 512) and file order, not
  by name (the release's branch names are not part of the documented layout), and the report
  prints the mapping.
* CRF-as-RNN (Caffe ``MultiStageMeanfield``): output = unary - C·(W_s·S(Q) + W_b·B(Q)) with
  full (L, L) kernel weights and C initialised to -I, each kernel normalised after filtering
  (1/(K·1)). deepcrf's DenseCRF computes logits = unary - mu·(sum_k W_k K_k Q) with the same
  meaning of every matrix, so W_s, W_b, C are copied as they are (mu = C), with
  ``full_kernel_weights=True`` and ``normalization="after"``. crfasrnn_pytorch adds the
  message instead (logits + C'·(...), C' initialised to +I), so mu = -C'.
* DeepLab geometry: Caffe's 3x3 / stride 2 / pad 1 pooling rounds its output size up,
  deepcrf's down (which keeps the MSc branches aligned for every size): the converted net
  equals the Caffe net for odd input sizes (the releases ran at 321 and 513); an even side
  gives Caffe one more score row / column (tested in ``test_models_convert``).
* Input conventions: Caffe BGR 0..255 minus the mean each release used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import build
from .convert_rules import Rule, Target, rules_by_prefix
from .deeplab import MSC_CHANNELS, VARIANTS
from .vgg import pool_channels, scaled

Shape = tuple[int, ...]
Shapes = Mapping[str, Sequence[Shape]]

#: Caffe layer names of VGG-16's convolutions -> index in deepcrf's ``features``.
VGG_CONVS: tuple[tuple[str, int], ...] = (
    ("conv1_1", 0), ("conv1_2", 2),
    ("conv2_1", 5), ("conv2_2", 7),
    ("conv3_1", 10), ("conv3_2", 12), ("conv3_3", 14),
    ("conv4_1", 17), ("conv4_2", 19), ("conv4_3", 21),
    ("conv5_1", 24), ("conv5_2", 26), ("conv5_3", 28),
)  # fmt: skip

#: Input conventions of the releases (Caffe: BGR, 0..255, minus these means).
DEEPLAB_NORMALIZE = "caffe"  # 104.008, 116.669, 122.675: data.transforms.CAFFE_BGR_MEAN
FCN_NORMALIZE = {"mode": "caffe", "mean": [104.00698793, 116.66876762, 122.67891434]}
CRFASRNN_NORMALIZE = {"mode": "caffe", "mean": [104.007, 116.669, 122.679]}
CRFASRNN_PYTORCH_NORMALIZE = {"mode": "caffe", "mean": [103.939, 116.779, 123.68]}

#: DenseCRF options of converted CRF-as-RNN models (the rest are CRFasRNN's defaults).
CONVERTED_CRF: dict[str, Any] = {
    "per_class_weights": False,
    "full_kernel_weights": True,
    "normalization": "after",
}

#: FCN-8s layer names: (CRF-as-RNN / legacy FCN names, official FCN names) -> deepcrf module.
FCN_HEAD: tuple[tuple[tuple[str, ...], str], ...] = (
    (("score-fr", "score_fr"), "score_fr"),
    (("score-pool4", "score_pool4"), "score_pool4"),
    (("score-pool3", "score_pool3"), "score_pool3"),
)
FCN_UPSAMPLERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("score2", "upscore2"), "upscore2"),
    (("score4", "upscore_pool4"), "upscore_pool4"),
    (("upsample", "upscore8"), "upscore8"),
)


@dataclass
class ArchPlan:
    """What an arch function returns: the model to fill, its rules, its input convention."""

    model: nn.Module
    rules: list[Rule]
    normalize: str | dict
    notes: list[str] = field(default_factory=list)


def vgg_rules(prefix: str = "") -> list[Rule]:
    """conv1_1 ... conv5_3 -> ``{prefix}features.<i>.weight/bias``."""
    return rules_by_prefix(((name, f"features.{i}") for name, i in VGG_CONVS), prefix)


def infer_width(shapes: Shapes, names: Sequence[str] = ("conv1_1", "conv1_1.weight")) -> float:
    """The channel multiplier of the source: conv1_1's filters / 64 (1.0 for the releases)."""
    for name in names:
        shape = _first(shapes, name)
        if shape is not None and len(shape) == 4 and shape[0] > 0:
            return 1.0 if shape[0] == 64 else shape[0] / 64
    return 1.0


def _first(shapes: Shapes, name: str) -> Shape | None:
    blobs = shapes.get(name)
    return tuple(blobs[0]) if blobs else None


def deeplab_variant(shapes: Shapes, default: str, width: float = 1.0) -> str:
    """The DeepLab v1 variant whose fc6 fits the source's fc6 blob (``default`` if unknown)."""
    c5 = scaled(512, width)
    shape = _first(shapes, "fc6")
    if shape is None:
        return default
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) == 4:
        out, kernel = dims[0], dims[2]
    elif len(dims) == 2:  # InnerProduct (out, 512 * k * k)
        out, kernel = dims[0], round((dims[1] / c5) ** 0.5)
    else:
        return default
    for name in (default, *VARIANTS):
        spec = VARIANTS[name]
        if (spec.kernel, scaled(spec.channels, width)) == (kernel, out):
            return name
    return default


def _classifier_name(shapes: Shapes) -> str:
    """fc8_voc12, else the one layer called fc8*, else fc8_voc12 (reported missing)."""
    if "fc8_voc12" in shapes:
        return "fc8_voc12"
    candidates = [n for n in shapes if n.startswith("fc8")]
    return candidates[0] if len(candidates) == 1 else "fc8_voc12"


def _deeplab_model(variant: str, num_classes: int, width: float, msc: bool = False) -> nn.Module:
    name = variant.replace("deeplab", "deeplab_msc", 1) if msc else variant
    return build(name, num_classes, width=width, pool5a=variant == "deeplab_largefov")


def _deeplab(shapes: Shapes, num_classes: int, variant: str, width: float) -> ArchPlan:
    model = _deeplab_model(variant, num_classes, width)
    rules = [
        *vgg_rules(),
        Rule.simple("fc6", "fc6.weight", "fc6.bias"),
        Rule.simple("fc7", "fc7.weight", "fc7.bias"),
        Rule.simple(_classifier_name(shapes), "fc8.weight", "fc8.bias"),
    ]
    return ArchPlan(model, rules, DEEPLAB_NORMALIZE)


def deeplab_largefov(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """DeepLab-LargeFOV (fc6 3x3 dilation 12, 1024 channels; with pool5a)."""
    return _deeplab(shapes, num_classes, "deeplab_largefov", width)


def deeplab_any(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """Any DeepLab v1 variant, chosen by the source's fc6 shape (4x4 -> ``deeplab``)."""
    return _deeplab(shapes, num_classes, deeplab_variant(shapes, "deeplab", width), width)


def vgg16_init(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """DeepLab's ImageNet initialisation (vgg16_20M: LargeFOV's fc6/fc7; vgg16_128: 7x7).

    The classifier (fc8, ImageNet's or absent) is left out and keeps its random
    initialisation; use the result as ``backbone_weights`` or ``init`` for training.
    """
    variant = deeplab_variant(shapes, "deeplab_largefov", width)
    model = _deeplab_model(variant, num_classes, width)
    rules = [
        *vgg_rules(),
        Rule.simple("fc6", "fc6.weight", "fc6.bias"),
        Rule.simple("fc7", "fc7.weight", "fc7.bias"),
    ]
    return ArchPlan(model, rules, DEEPLAB_NORMALIZE)


def _msc_sources(width: float) -> tuple[int, ...]:
    """Input channels of the MSc branches' 3x3 layers: image, pool1..pool4."""
    return (3, *pool_channels(width)[:4])


def _msc_branch_layers(
    shapes: Shapes, used: set[str], width: float
) -> tuple[list[list[str]], list[str]]:
    """Per branch [3x3, 1x1, classifier] layer names, found by shape; and problems."""
    sources, mc = _msc_sources(width), scaled(MSC_CHANNELS, width)
    first: dict[int, str] = {}
    conv1, scores, problems = [], [], []
    for name, blobs in shapes.items():
        if name in used or not blobs:
            continue
        dims = tuple(blobs[0])
        if len(dims) != 4 or dims[0] == 0:
            continue
        if dims[0] == mc and dims[2:] == (3, 3) and dims[1] in sources:
            branch = sources.index(dims[1])
            if branch in first:
                problems.append(
                    f"two MSc 3x3 layers read {dims[1]} channels: {first[branch]}, {name}"
                )
            first[branch] = name
        elif dims[1:] == (mc, 1, 1):
            (conv1 if dims[0] == mc else scores).append(name)
    order = sorted(first, key=lambda b: list(shapes).index(first[b]))
    branches: list[list[str]] = [[] for _ in sources]
    if len(order) == len(conv1) == len(scores):
        for k, branch in enumerate(order):
            branches[branch] = [first[branch], conv1[k], scores[k]]
    else:
        problems.append(
            f"MSc branches: found {len(order)} 3x3 layers, {len(conv1)} 128->128 and "
            f"{len(scores)} 128->K layers (expected 5 of each)"
        )
    return branches, problems


def deeplab_msc_largefov(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """DeepLab-MSc-LargeFOV: the LargeFOV trunk plus five MLP branches folded into fc8.

    A DeepLab-MSc file with another fc6 (4x4, 7x7) gives the matching ``deeplab_msc*`` model.
    """
    variant = deeplab_variant(shapes, "deeplab_largefov", width)
    model = _deeplab_model(variant, num_classes, width, msc=True)
    fc = model.fc7.out_channels
    classifier = _classifier_name(shapes)
    rules = [
        *vgg_rules(),
        Rule.simple("fc6", "fc6.weight", "fc6.bias"),
        Rule.simple("fc7", "fc7.weight", "fc7.bias"),
        Rule(
            (classifier,),
            (Target("fc8.weight", (0, fc), axis=1), Target("fc8.bias", add=True)),
        ),
    ]
    used = {name for rule in rules for name in rule.names}
    branches, problems = _msc_branch_layers(shapes, used, width)
    notes = list(problems)
    sources, mc = _msc_sources(width), scaled(MSC_CHANNELS, width)
    for i, names in enumerate(branches):
        if not names:
            missing = f"MSc branch {i} (3x3 conv reading {sources[i]} channels)"
            rules.append(Rule((missing,), (Target(f"msc_branches.{i}.0.weight"),)))
            continue
        conv3, conv1, score = names
        block = (fc + i * mc, fc + (i + 1) * mc)
        rules += [
            Rule.simple(conv3, f"msc_branches.{i}.0.weight", f"msc_branches.{i}.0.bias"),
            Rule.simple(conv1, f"msc_branches.{i}.2.weight", f"msc_branches.{i}.2.bias"),
            Rule(
                (score,),
                (Target("fc8.weight", block, axis=1), Target("fc8.bias", add=True)),
            ),
        ]
    for i, names in enumerate(branches):
        if names:
            notes.append(f"MSc branch {i} ({sources[i]} input channels): {', '.join(names)}")
    return ArchPlan(model, rules, DEEPLAB_NORMALIZE, notes)


def _fcn_rules(shapes: Shapes, prefix: str) -> tuple[list[Rule], bool]:
    """FCN-8s rules (either naming); whether the source's first up-sampling has a bias."""
    rules = [
        *vgg_rules(prefix),
        Rule.simple("fc6", f"{prefix}fc6.weight", f"{prefix}fc6.bias"),
        Rule.simple("fc7", f"{prefix}fc7.weight", f"{prefix}fc7.bias"),
        *rules_by_prefix(FCN_HEAD, prefix),
    ]
    bias = False
    for names, module in FCN_UPSAMPLERS:
        present = next((n for n in names if n in shapes), None)
        with_bias = module == "upscore2" and present is not None and len(shapes[present]) == 2
        bias = bias or with_bias
        params = [f"{prefix}{module}.weight"] + ([f"{prefix}{module}.bias"] if with_bias else [])
        rules.append(Rule.simple(names, *params))
    return rules, bias


def fcn8s(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """FCN-8s (Caffe crops 5 / 9 / 31 and conv1_1 pad 100, as deepcrf's FCN8s)."""
    rules, bias = _fcn_rules(shapes, "")
    model = build("fcn8s", num_classes, width=width, upscore2_bias=bias)
    return ArchPlan(model, rules, FCN_NORMALIZE)


def crfasrnn(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """CRF-as-RNN: FCN-8s + ``inference1``'s spatial / bilateral kernel weights and C."""
    rules, bias = _fcn_rules(shapes, "fcn.")
    rules.append(
        Rule(
            ("inference1",),
            (
                Target("crf.kernel_weights", 0),  # spatial (Gaussian) kernel weights W_s
                Target("crf.kernel_weights", 1),  # bilateral kernel weights W_b
                Target("crf.compat"),  # compatibility C (same sign convention)
            ),
        )
    )
    model = build(
        "crfasrnn", num_classes, width=width, upscore2_bias=bias, crf=dict(CONVERTED_CRF)
    )
    return ArchPlan(model, rules, CRFASRNN_NORMALIZE)


def crfasrnn_pytorch(shapes: Shapes, num_classes: int, width: float = 1.0) -> ArchPlan:
    """crfasrnn_pytorch's state dict (keys ``conv1_1.weight`` ... ``crfrnn.*``)."""
    pairs = [(f"{name}.{kind}", f"fcn.features.{i}.{kind}") for name, i in VGG_CONVS
             for kind in ("weight", "bias")]  # fmt: skip
    for module in ("fc6", "fc7", "score_fr", "score_pool3", "score_pool4", "upscore2"):
        pairs += [(f"{module}.{kind}", f"fcn.{module}.{kind}") for kind in ("weight", "bias")]
    pairs += [("upscore_pool4.weight", "fcn.upscore_pool4.weight"),
              ("upscore8.weight", "fcn.upscore8.weight")]  # fmt: skip
    rules = [Rule.simple(key, param) for key, param in pairs]
    rules += [
        Rule(("crfrnn.spatial_ker_weights",), (Target("crf.kernel_weights", 0),)),
        Rule(("crfrnn.bilateral_ker_weights",), (Target("crf.kernel_weights", 1),)),
        # logits + C'·message there, logits - mu·message here: mu = -C'
        Rule(("crfrnn.compatibility_matrix",), (Target("crf.compat", scale=-1.0),)),
    ]
    model = build(
        "crfasrnn", num_classes, width=width, upscore2_bias=True, crf=dict(CONVERTED_CRF)
    )
    return ArchPlan(model, rules, CRFASRNN_PYTORCH_NORMALIZE)


#: ``deepcrf convert --arch`` name -> table function.
ARCHS: dict[str, Callable[[Shapes, int, float], ArchPlan]] = {
    "deeplab_largefov": deeplab_largefov,
    "deeplab": deeplab_any,
    "deeplab_msc_largefov": deeplab_msc_largefov,
    "vgg16_init": vgg16_init,
    "fcn8s": fcn8s,
    "crfasrnn": crfasrnn,
    "crfasrnn_pytorch": crfasrnn_pytorch,
}
