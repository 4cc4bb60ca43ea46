"""Model zoo: ``build(name, num_classes, **options)`` from the plain dict ``MODELS``.

Every model has an ``output_stride`` attribute and accepts any input size; every family takes a
``width`` option (channel multiplier: ``width=1/16`` gives a light model running the same code).

=======================  ===========================================================  ======
name                     output for an image (B, 3, H, W)                             stride
=======================  ===========================================================  ======
deeplab_7x7, deeplab,    scores (B, K, ceil(H/8), ceil(W/8))                          8
deeplab_4x4,
deeplab_largefov,
deeplab_msc*  (same)
fcn8s                    scores (B, K, H, W)                                          1
crfasrnn                 forward(x, image 0..255) -> CRF logits (B, K, H, W)          1
joint_deeplab_crf        forward(x, image): DeepLab up-sampled + learned DenseCRF       1
featmap_net              features (B, out_channels, ceil(round(1.2H)/16), ...)         16*
unary_net                node features (B, C, h, w) or (N, C) -> (B, K, h, w) / (N, K)  -
pairwise_net             edge features (E, 2C) -> (E, K*K), index y_p*K + y_q           -
refine_net               (pools, coarse scores) -> scores at 1/2 (or 1/4)              2
=======================  ===========================================================  ======

(*) stride 16 of the 1.2-scaled image. ``num_classes`` is ignored by ``featmap_net``.
Built models carry ``model.config`` (name, num_classes, options) so ``io.save_model`` /
``io.load_model`` can rebuild them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import nn

from deepcrf.contextual import RELATIONS, ContextualCRF

from .crfasrnn import CRFasRNN
from .deeplab import VARIANTS, build_deeplab
from .fcn import FCN8s
from .featmap import FeatMapNet, PairwiseNet, UnaryNet
from .io import load_imagenet_vgg16, load_model, load_safetensors, save_safetensors
from .joint import JointDeepLabCRF
from .refine_net import RefineNet
from .vgg import pool_channels


def _featmap(num_classes: int | None = None, **options: Any) -> FeatMapNet:
    return FeatMapNet(**options)  # the feature map does not depend on the classes


MODELS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(build_deeplab, name) for name in VARIANTS},
    **{
        name.replace("deeplab", "deeplab_msc", 1): partial(build_deeplab, name, msc=True)
        for name in VARIANTS
    },
    "fcn8s": FCN8s,
    "crfasrnn": CRFasRNN,
    "joint_deeplab_crf": JointDeepLabCRF,
    "featmap_net": _featmap,
    "unary_net": UnaryNet,
    "pairwise_net": PairwiseNet,
    "refine_net": RefineNet,
}

#: Models whose output does not depend on num_classes (None is accepted).
CLASS_FREE = frozenset({"featmap_net"})


def list_models() -> list[str]:
    """Names accepted by ``build``, sorted."""
    return sorted(MODELS)


def build(name: str, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes; ``options`` go to its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    valid = isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes > 0
    if not valid and not (name in CLASS_FREE and num_classes is None):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        model = MODELS[name](num_classes=num_classes, **options)
    except TypeError as exc:
        raise TypeError(f"bad options for model {name!r}: {exc}") from exc
    model.config = {"name": name, "num_classes": num_classes, **options}
    return model


def build_contextual_crf(
    num_classes: int,
    width: float = 1.0,
    relations: Sequence[str] | None = None,
    shared_featmap: bool = False,
    featmap_options: dict[str, Any] | None = None,
    unary_nets: int = 1,
    refine_net: bool = False,
    **options: Any,
) -> ContextualCRF:
    """Lin et al.'s contextual deep CRF from the zoo: a FeatMap-Net per potential type (or
    one shared), ``unary_nets`` Unary-Nets (an ensemble when > 1) and one Pairwise-Net per
    relation (``[]``: the unary-only model), all of the given ``width``; ``featmap_options``
    go to ``FeatMapNet`` (scales, pyramid_windows, ...) and ``options`` to
    ``deepcrf.contextual.ContextualCRF`` (box, grid, iterations, chunk_size, ...);
    ``refine_net`` adds the refinement network of the paper's second stage (stride 2) on the
    first FeatMap-Net's pooling outputs."""
    relations = tuple(RELATIONS if relations is None else relations)
    if isinstance(unary_nets, bool) or not isinstance(unary_nets, int) or unary_nets < 1:
        raise ValueError(f"unary_nets must be a positive int, got {unary_nets!r}")
    count = 1 if shared_featmap else unary_nets + len(relations)
    featmaps = [build("featmap_net", width=width, **(featmap_options or {})) for _ in range(count)]
    c = featmaps[0].out_channels
    unary = [
        build("unary_net", num_classes=num_classes, in_channels=c, width=width)
        for _ in range(unary_nets)
    ]
    pairwise = [
        build("pairwise_net", num_classes=num_classes, in_channels=2 * c, width=width)
        for _ in relations
    ]
    refine = None
    if refine_net:
        trunk = featmaps[0]
        refine = build(
            "refine_net",
            num_classes=num_classes,
            width=width,
            feature_channels=pool_channels(width)[: trunk.blocks],
        )
    return ContextualCRF(
        featmaps, unary, pairwise, num_classes, relations, refine_net=refine, **options
    )


MODELS["contextual_crf"] = build_contextual_crf


__all__ = [
    "MODELS",
    "build",
    "build_contextual_crf",
    "list_models",
    "load_imagenet_vgg16",
    "load_model",
    "load_safetensors",
    "save_safetensors",
]
