"""Convert the papers' released weights (caffemodels, crfasrnn_pytorch's .pth) to deepcrf models.

``convert(source, arch, num_classes)`` returns the filled model (``model.config`` records the
architecture and the input convention under ``"normalize"``) and a :class:`ConversionReport`;
``convert_file`` also writes it atomically as a ``.safetensors`` that
``deepcrf.models.load_model`` rebuilds. A caffemodel is read twice, streaming: once for the
layer shapes (everything is validated before copying: missing layers, shape mismatches naming
both shapes, a model of another architecture listing the layers it does not use), once to copy
the blobs, so memory holds the model plus one layer. The tables live in ``convert_archs``.
The model's channel multiplier follows the source (conv1_1's filters / 64: 1 for the
releases), so light test files convert to light models through the same code.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepcrf.fileio import atomic_write

from .caffe import CaffeModelError, iter_caffemodel
from .convert_archs import ARCHS, infer_width
from .convert_rules import ConversionError, ConversionReport, apply, plan
from .io import save_safetensors

__all__ = ["ARCHS", "ConversionError", "ConversionReport", "convert", "convert_file"]

Shape = tuple[int, ...]
Blobs = Sequence[np.ndarray | torch.Tensor]
Stream = Callable[[], Iterable[tuple[str, Blobs]]]

#: Architectures whose source is a PyTorch state dict rather than a caffemodel.
PYTORCH_ARCHS = frozenset({"crfasrnn_pytorch"})


def _caffemodel_source(path: Path) -> tuple[OrderedDict[str, list[Shape]], Stream]:
    shapes: OrderedDict[str, list[Shape]] = OrderedDict()
    for layer in iter_caffemodel(path):
        if layer.name in shapes:
            raise CaffeModelError(f"{path}: two layers with weights are named {layer.name!r}")
        shapes[layer.name] = layer.shapes

    def stream() -> Iterable[tuple[str, Blobs]]:
        return ((layer.name, layer.blobs) for layer in iter_caffemodel(path))

    return shapes, stream


def _state_dict_source(path: Path) -> tuple[OrderedDict[str, list[Shape]], Stream]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors of every kind
        raise ConversionError(
            f"{path} is not a PyTorch state dict readable with weights_only=True: {exc}"
        ) from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConversionError(f"{path} does not hold a state dict of named tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    shapes = OrderedDict((k, [tuple(v.shape)]) for k, v in state.items())
    return shapes, lambda: ((k, [v]) for k, v in state.items())


def convert(
    source: str | os.PathLike, arch: str, num_classes: int = 21
) -> tuple[nn.Module, ConversionReport]:
    """Convert ``source`` (a caffemodel, or a .pth for ``crfasrnn_pytorch``) to a model.

    Raises ``FileNotFoundError``, :class:`~deepcrf.models.caffe.CaffeModelError` (not a
    caffemodel) or :class:`ConversionError` (does not fit ``arch``: every problem listed).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"source weights not found: {path}")
    reader = _state_dict_source if arch in PYTORCH_ARCHS else _caffemodel_source
    try:
        shapes, stream = reader(path)
    except (CaffeModelError, ConversionError) as exc:
        hint = ""
        if arch not in PYTORCH_ARCHS and path.suffix in (".pth", ".pt"):
            hint = " (a PyTorch file: crfasrnn_pytorch's weights need --arch crfasrnn_pytorch)"
        elif arch in PYTORCH_ARCHS and path.suffix == ".caffemodel":
            hint = " (a caffemodel: use --arch crfasrnn for TVG_CRFRNN_COCO_VOC.caffemodel)"
        if not hint:
            raise
        raise type(exc)(f"{exc}{hint}") from exc
    width = infer_width(shapes)
    target = ARCHS[arch](shapes, num_classes, width)
    model = target.model
    report = ConversionReport(str(path), arch, model.config["name"], notes=list(target.notes))
    if width != 1.0:
        filters = round(64 * width)
        report.notes.append(f"conv1_1 has {filters} filters: a light model, width={width:g}")
    the_plan = plan(shapes, target.rules, model, report)
    apply(the_plan, stream(), model)
    model.config["normalize"] = target.normalize
    report.notes.append(f"input convention recorded in the model: normalize={target.normalize}")
    return model.eval(), report


def convert_file(
    source: str | os.PathLike,
    arch: str,
    out: str | os.PathLike,
    num_classes: int = 21,
) -> ConversionReport:
    """``convert`` then write the model to ``out`` (.safetensors) atomically; the report.

    ``out`` must differ from ``source`` (the input is never overwritten); nothing is written
    when the conversion fails.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors file, got {out}")
    if Path(source).exists() and out.exists() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the source file; refusing to overwrite the input")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    model, report = convert(source, arch, num_classes)
    atomic_write(out, lambda tmp: save_safetensors(model, tmp))
    return report
