"""Running a trained model: load a run, per-image probabilities, the dense CRF after it.

``load_run(path)`` accepts a run folder (its ``model.safetensors`` and ``config.yaml``) or a
``.safetensors`` file written by ``deepcrf train`` (or ``deepcrf.models.save_safetensors``).
``model_probabilities(model, image)`` is the one model -> softmax (L, H, W) path shared by
``deepcrf eval --model``, ``deepcrf predict``, ``deepcrf crf-search`` and the recipes: the
model's input normalisation, bilinear up-sampling of stride-s scores to the image, softmax.
Models with their own CRF (``needs_image``) get the raw pixels as well; their output is
already the CRF's. Models whose output is already probabilities (``outputs_probabilities``:
the contextual CRF's coarse mean-field marginals) have those up-sampled bilinearly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import normalize
from ..params import PRESETS, CRFParams

__all__ = [
    "LoadedRun",
    "channels_last",
    "crf_refine",
    "iterate_dataset",
    "load_run",
    "model_logits",
    "model_probabilities",
    "probabilities_to_labels",
]

CRF_METADATA_KEY = "deepcrf.crf"


@dataclass
class LoadedRun:
    """A trained model and the post-processing CRF parameters its run carries."""

    model: nn.Module
    crf: CRFParams
    path: Path
    #: the file the weights were read from (the run folder's ``model.safetensors``)
    weights: Path

    @property
    def num_classes(self) -> int:
        return int(self.model.config["num_classes"])

    @property
    def has_own_crf(self) -> bool:
        """The network ends in a trained CRF (CRF-as-RNN, joint): no second CRF is applied."""
        return bool(getattr(self.model, "needs_image", False))


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(
                f"--model: {path} has no model.safetensors (is the training finished?)"
            )
        return weights
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"--model: expected a run folder or a .safetensors file, got {path}")
        return path
    raise FileNotFoundError(f"--model: no such run folder or file {path}")


def read_crf_metadata(weights: Path) -> CRFParams | None:
    """The CRF parameters stored with the weights by ``deepcrf train``, if any."""
    from ..models.io import read_safetensors_metadata

    meta = read_safetensors_metadata(weights)
    if CRF_METADATA_KEY not in meta:
        return None
    return CRFParams.from_dict(json.loads(meta[CRF_METADATA_KEY]), source=f"{weights} crf")


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """The model of a run folder or .safetensors file, in eval mode, and its CRF parameters
    (the run's ``crf`` section; DeepLab-LargeFOV's published values when none is stored)."""
    from ..models import load_model

    path = Path(path)
    weights = _weights_file(path)
    model = load_model(weights, device=device).eval()
    crf = read_crf_metadata(weights) or PRESETS["deeplab_largefov"]
    return LoadedRun(model=model, crf=crf, path=path, weights=weights)


def _as_batch(image: np.ndarray | torch.Tensor) -> np.ndarray:
    raw = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if raw.ndim != 3 or raw.shape[2] != 3 or raw.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {raw.shape} {raw.dtype}")
    return raw


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """A network's (B, 3, H, W) input in channels-last memory: oneDNN's convolutions (and their
    backward) run much faster in that layout on thin networks, e.g. the tiny presets' 4-channel
    VGG-16 maps (a 1/16-wide FCN-8s training step 1.5x faster on one thread); values unchanged,
    and the weights keep their layout (state dicts stay contiguous)."""
    return images.contiguous(memory_format=torch.channels_last)


def model_logits(model: nn.Module, images_uint8: list[np.ndarray], device=None) -> torch.Tensor:
    """Full-resolution logits (B, L, H, W) for equally sized (H, W, 3) uint8 images."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mode = model.config.get("normalize", "imagenet") if hasattr(model, "config") else "imagenet"
    x = torch.stack([normalize(_as_batch(im), mode) for im in images_uint8])
    x = channels_last(x.to(device))
    if getattr(model, "needs_image", False):
        raw = torch.stack(
            [torch.from_numpy(_as_batch(im)).permute(2, 0, 1) for im in images_uint8]
        ).to(device, torch.float32)
        logits = model(x, raw)
    else:
        logits = model(x)
    if getattr(model, "outputs_probabilities", False):
        # marginals (the contextual CRF's mean field): up-sample the probabilities
        # bilinearly, renormalise, and return their logarithm (its softmax is them again)
        probs = logits.float()
        if probs.shape[-2:] != x.shape[-2:]:
            probs = F.interpolate(probs, size=x.shape[-2:], mode="bilinear", align_corners=False)
        probs = probs / probs.sum(dim=1, keepdim=True)
        return probs.clamp_min(1e-30).log()
    if logits.shape[-2:] != x.shape[-2:]:
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits.float()


@torch.no_grad()
def model_probabilities(
    model: nn.Module, image_uint8: np.ndarray | torch.Tensor, device=None
) -> np.ndarray:
    """Softmax probabilities (L, H, W) float32 of ``model`` for one (H, W, 3) uint8 image."""
    was_training = model.training
    model.eval()
    try:
        logits = model_logits(model, [_as_batch(image_uint8)], device)
    finally:
        model.train(was_training)
    return torch.softmax(logits[0], dim=0).cpu().numpy().astype(np.float32)


def crf_refine(probs: np.ndarray, image_uint8: np.ndarray, params: CRFParams) -> np.ndarray:
    """The dense CRF's marginals (L, H, W) for probabilities and the raw image."""
    from ..dense import refine

    return refine(probs, np.ascontiguousarray(image_uint8), **params.to_dict())


def probabilities_to_labels(probs: np.ndarray) -> np.ndarray:
    """The (H, W) uint8 arg-max labels of (L, H, W) probabilities."""
    return probs.argmax(0).astype(np.uint8)


def iterate_dataset(dataset, indices=None) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, raw (H, W, 3) uint8 image, (H, W) int64 label or None) of each item."""
    for i in indices if indices is not None else range(len(dataset)):
        sample = dataset[i]
        raw = sample["raw_image"]
        raw = raw.numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        label = sample.get("label")
        if isinstance(label, torch.Tensor):
            label = label.numpy()
        yield sample["name"], raw, label
