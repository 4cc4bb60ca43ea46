"""Weights in and out: ImageNet VGG-16 import (torchvision checkpoints) and safetensors files.

``load_imagenet_vgg16(model, path)`` copies the 13 convolutions of a torchvision ``vgg16``
state dict (``features.*``) by name, and converts the fully connected layers into the
convolutions a model lists in its ``imagenet_fc`` attribute (module name -> torchvision layer),
the way the papers did it:

* fc6 (``classifier.0``, 4096 x 25088) is viewed as a 4096 x 512 x 7 x 7 convolution, then
  decimated spatially to the model's k x k kernel by keeping every (6/(k-1))-th tap (k = 4:
  taps 0, 2, 4, 6; k = 3: taps 0, 3, 6; k = 1: the centre) and along its output channels to
  the model's count by keeping every (4096/C)-th filter (DeepLab-LargeFOV: 0, 4, 8, ...);
* fc7 (``classifier.3``) becomes a 1x1 convolution, decimated the same way in both its output
  and its input channels (the input ones follow fc6's kept filters).

Everything else (fc8, score layers, MSc branches, Conv Block 6, ...) keeps its random
initialisation; ``classifier.6`` (the 1000 ImageNet classes) is only used by ``VGG16`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepcrf.fileio import atomic_write

from .validate import check_config, is_safetensors, read_header

#: Parameter names and shapes of torchvision's ``vgg16`` (no batch norm).
TORCHVISION_VGG16_SHAPES: dict[str, tuple[int, ...]] = {}
_IN = 3
for _index, _out in zip(
    (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
    strict=True,
):
    TORCHVISION_VGG16_SHAPES[f"features.{_index}.weight"] = (_out, _IN, 3, 3)
    TORCHVISION_VGG16_SHAPES[f"features.{_index}.bias"] = (_out,)
    _IN = _out
for _index, _out, _in in ((0, 4096, 25088), (3, 4096, 4096), (6, 1000, 4096)):
    TORCHVISION_VGG16_SHAPES[f"classifier.{_index}.weight"] = (_out, _in)
    TORCHVISION_VGG16_SHAPES[f"classifier.{_index}.bias"] = (_out,)


@dataclass
class ImportReport:
    """What ``load_imagenet_vgg16`` did: parameters copied, converted, and left as initialised."""

    copied: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    #: input convention the imported weights expect (``deepcrf.data.transforms.normalize``)
    normalize: str | dict = "imagenet"


def spatial_taps(kernel: int, source: int = 7) -> list[int]:
    """Indices kept when decimating a ``source`` x ``source`` kernel to ``kernel`` x ``kernel``."""
    if kernel == 1:
        return [source // 2]
    if kernel < 1 or kernel > source or (source - 1) % (kernel - 1):
        valid = [1] + [k for k in range(2, source + 1) if (source - 1) % (k - 1) == 0]
        raise ValueError(
            f"cannot decimate a {source}x{source} kernel to {kernel}x{kernel} evenly; "
            f"kernel must be one of {valid}"
        )
    step = (source - 1) // (kernel - 1)
    return list(range(0, source, step))


def channel_step(target: int, source: int = 4096) -> int:
    """Step of the channel decimation ``source`` -> ``target`` (every step-th channel kept)."""
    if target < 1 or source % target:
        raise ValueError(f"cannot decimate {source} channels to {target}: it must divide {source}")
    return source // target


def decimate_fc(
    weight: torch.Tensor,
    bias: torch.Tensor,
    target_shape: tuple[int, ...],
    in_shape: tuple[int, int, int],
    decimate_inputs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a linear layer (out, in) into a conv weight of ``target_shape`` (O, I, k, k).

    ``in_shape`` = (C, s, s) is how the linear layer's inputs are laid out (C channels of an
    s x s map, torchvision's flatten order). Output channels keep every (out/O)-th filter,
    the s x s taps are decimated to k x k, and with ``decimate_inputs`` the input channels
    keep every (C/I)-th (fc7 following a decimated fc6); otherwise I must equal C.
    """
    if len(target_shape) != 4 or target_shape[2] != target_shape[3]:
        raise ValueError(f"target must be a square convolution weight, got {target_shape}")
    channels, size = in_shape[0], in_shape[1]
    out, k = target_shape[0], target_shape[2]
    if not decimate_inputs and target_shape[1] != channels:
        raise ValueError(f"needs {channels} input channels, the model has {target_shape[1]}")
    conv = weight.reshape(weight.shape[0], channels, size, size)
    rows = torch.arange(0, weight.shape[0], channel_step(out, weight.shape[0]))
    cols = torch.arange(0, channels, channel_step(target_shape[1], channels))
    taps = torch.tensor(spatial_taps(k, size))
    conv = conv[rows][:, cols][:, :, taps][:, :, :, taps]
    return conv.contiguous(), bias[rows].contiguous()


def _read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet VGG-16 checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors" or is_safetensors(path):
        return _load_tensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load of a foreign file raises anything (KeyError, ...)
        if isinstance(exc, (PermissionError, IsADirectoryError, MemoryError)):
            raise
        raise ValueError(
            f"{path}: cannot read as a torch checkpoint (.pth) or safetensors file: {exc}"
        ) from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return dict(state)


def _check_torchvision_layout(state: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(TORCHVISION_VGG16_SHAPES) - set(state))
    unexpected = sorted(set(state) - set(TORCHVISION_VGG16_SHAPES))
    wrong = [
        f"{k}: {tuple(state[k].shape)} (expected {TORCHVISION_VGG16_SHAPES[k]})"
        for k in TORCHVISION_VGG16_SHAPES
        if k in state and tuple(state[k].shape) != TORCHVISION_VGG16_SHAPES[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong)}")
    if problems:
        raise ValueError(
            "checkpoint is not a torchvision vgg16 state dict: " + " | ".join(problems)
        )


def load_imagenet_vgg16(
    model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]
) -> ImportReport:
    """Initialise ``model`` from an ImageNet VGG-16 checkpoint in torchvision's format.

    ``source`` is a ``.pth`` file (``torch.load``-able state dict), a ``.safetensors`` file or a
    state dict. Raises ``ValueError`` listing missing / unexpected / mis-shaped keys, and when
    the model's own layers do not fit (e.g. built with ``width`` != 1).

    A deepcrf model file (``.safetensors`` with a ``deepcrf.config``, e.g. the output of
    ``deepcrf convert --arch vgg16_init`` for DeepLab's vgg16_20M) is also accepted: its VGG-16
    convolutions and fc6 / fc7 are copied by name (shapes must match) and
    ``report.normalize`` says which input convention they expect (Caffe's BGR for those).
    """
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module) and any(
        isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in features.modules()
    ):
        raise ValueError(
            "ImageNet VGG-16 weights fit a trunk without normalisation layers; this model was "
            "built with norm= (batch / group): build it with norm=None to load them"
        )
    converted = _converted_backbone(source)
    if converted is not None:
        return _load_converted_backbone(model, *converted)
    state = _read_state_dict(source)
    _check_torchvision_layout(state)
    target = model.state_dict()
    fc_map: dict[str, str] = dict(getattr(model, "imagenet_fc", {}))
    new: dict[str, torch.Tensor] = {}
    report = ImportReport()
    mismatched = []
    for key, value in target.items():
        module = key.rsplit(".", 1)[0]
        if module in fc_map:
            continue
        if key in state:
            if state[key].shape != value.shape:
                mismatched.append(
                    f"{key}: model {tuple(value.shape)}, checkpoint {tuple(state[key].shape)}"
                )
                continue
            new[key] = state[key]
            report.copied.append(key)
        else:
            report.initialised.append(key)
    in_layout = {"classifier.0": (512, 7, 7), "classifier.3": (4096, 1, 1)}
    for module, layer in fc_map.items():
        w_key, b_key = f"{module}.weight", f"{module}.bias"
        if w_key not in target or b_key not in target:
            raise ValueError(f"model has no convolution {module!r} (listed in imagenet_fc)")
        try:
            w, b = decimate_fc(
                state[f"{layer}.weight"],
                state[f"{layer}.bias"],
                tuple(target[w_key].shape),
                in_layout[layer],
                decimate_inputs=layer == "classifier.3",
            )
        except ValueError as exc:
            mismatched.append(f"{w_key} {tuple(target[w_key].shape)} from {layer}: {exc}")
            continue
        new[w_key], new[b_key] = w, b
        report.converted += [w_key, b_key]
    if not report.copied and not mismatched:
        raise ValueError("model has no parameters named like torchvision's vgg16 (features.*)")
    if mismatched:
        raise ValueError(
            "model does not fit the ImageNet VGG-16 weights (was it built with width != 1?): "
            + "; ".join(mismatched)
        )
    with torch.no_grad():
        for key, value in new.items():
            target[key].copy_(value)
    return report


def _converted_backbone(source) -> tuple[Path, dict, dict[str, torch.Tensor]] | None:
    """(path, config, tensors) when ``source`` is a deepcrf model file, else None."""
    if isinstance(source, Mapping) or Path(source).suffix.lower() != ".safetensors":
        return None
    path = Path(source)
    if not path.is_file():
        return None  # the torchvision path reports the missing file
    _, metadata = _checked_header(path)
    if "deepcrf.config" not in metadata:
        return None
    try:
        config = json.loads(metadata["deepcrf.config"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: deepcrf.config is not valid JSON: {exc}") from exc
    return path, config, _load_tensors(path)


def _load_converted_backbone(
    model: nn.Module, path: Path, config: dict, state: dict[str, torch.Tensor]
) -> ImportReport:
    """Copy ``features.*``, ``fc6.*``, ``fc7.*`` of a deepcrf model file into ``model``."""
    target = model.state_dict()
    wanted = [k for k in target if k.split(".")[0] in ("features", "fc6", "fc7")]
    missing = [k for k in wanted if k not in state]
    wrong = [
        f"{k}: model {tuple(target[k].shape)}, file {tuple(state[k].shape)}"
        for k in wanted
        if k in state and state[k].shape != target[k].shape
    ]
    if not wanted or missing or wrong:
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + wrong
        raise ValueError(
            f"{path} ({config.get('name')}) does not fit the model's VGG-16 backbone: "
            + ("; ".join(problems) or "the model has no features.* / fc6 / fc7 parameters")
        )
    with torch.no_grad():
        for key in wanted:
            target[key].copy_(state[key])
    return ImportReport(
        copied=wanted,
        initialised=[k for k in target if k not in wanted],
        normalize=config.get("normalize", "imagenet"),
    )


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "safetensors is needed to read/write .safetensors files: pip install 'deepcrf[io]'"
        ) from exc
    return safetensors.torch


def save_safetensors(
    model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``model``'s state dict (and its ``config``, if built by ``build``) to ``path``;
    ``metadata`` adds string entries (e.g. a training run's CRF parameters)."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = dict(metadata or {})
    config = getattr(model, "config", None)
    if config is not None:
        metadata["deepcrf.config"] = json.dumps(config)
    st = _safetensors()
    return atomic_write(path, lambda tmp: st.save_file(tensors, str(tmp), metadata=metadata))


def load_safetensors(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load the tensors in ``path`` into ``model`` (``strict`` as in ``load_state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    state = _load_tensors(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the model: {exc}") from exc
    return model


#: Keys of ``model.config`` that describe how to use the model, not constructor options:
#: ``normalize`` is the input convention (a mode of ``deepcrf.data.transforms.normalize``).
RECORDED_KEYS = ("normalize",)


def load_model(path: str | Path, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild the model saved by ``save_safetensors`` from its stored config, then load it.

    Config keys in ``RECORDED_KEYS`` (e.g. ``normalize``) are kept in ``model.config``
    without being passed to the constructor.
    """
    from . import build

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    header, metadata = _checked_header(path)
    if "deepcrf.config" not in metadata:
        raise ValueError(f"{path} has no deepcrf.config metadata; use load_safetensors instead")
    try:
        config = json.loads(metadata["deepcrf.config"])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: deepcrf.config is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or "name" not in config or "num_classes" not in config:
        raise ValueError(f"{path}: deepcrf.config metadata must hold name and num_classes")
    recorded = {k: config.pop(k) for k in RECORDED_KEYS if k in config}
    config = dict(check_config(path, config, header))  # before allocating anything
    model = build(config.pop("name"), config.pop("num_classes"), **config)
    model.config.update(recorded)
    load_safetensors(model, path)
    return model.to(device) if device is not None else model


def _checked_header(path: Path) -> tuple[dict, dict[str, str]]:
    """The safetensors header of ``path``, with errors naming the file."""
    if path.suffix.lower() != ".safetensors" and not is_safetensors(path):
        raise ValueError(f"{path}: expected a .safetensors file (got suffix {path.suffix!r})")
    return read_header(path)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a .safetensors file (empty when it has none); a corrupt file
    is a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    return dict(_checked_header(path)[1])


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a corrupt file is a ValueError naming it."""
    _checked_header(path)
    try:
        return dict(_safetensors().load_file(str(path)))
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{path}: cannot read the safetensors file: {exc}") from exc
    except Exception as exc:  # safetensors' own error type is not an OSError/ValueError
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{path}: cannot read the safetensors file: {exc}") from exc
