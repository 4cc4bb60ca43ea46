"""Training checkpoints and model export, written atomically (``deepcrf.fileio``).

``checkpoint.pt`` holds everything a resumed run needs to continue bit for bit: model,
optimizer and grad-scaler states, step / epoch / position in the epoch, every process's RNG
states (torch, CUDA, random; data augmentation draws from generators seeded by (seed, epoch,
index), never from a global state) and the config. A file is replaced only by a complete
new one; a run that fails (NaN loss, error, SIGKILL) leaves the last good checkpoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import atomic_write
from ..params import CRFParams

__all__ = [
    "get_rng_state",
    "load_checkpoint",
    "load_init",
    "save_checkpoint",
    "save_model",
    "set_rng_state",
]


def get_rng_state() -> dict[str, Any]:
    """This process's random generator states."""
    state = {"torch": torch.get_rng_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` atomically."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (clear error naming the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {path} (start the run without --resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"--resume: cannot read checkpoint {path}: {exc}") from None


def save_model(model: nn.Module, path: Path, crf: CRFParams) -> Path:
    """``model.safetensors``: weights, model config (``load_model``) and the run's CRF."""
    from ..models.io import save_safetensors
    from .predict import CRF_METADATA_KEY

    metadata = {CRF_METADATA_KEY: json.dumps(crf.to_dict())}
    return atomic_write(path, lambda tmp: save_safetensors(model, tmp, metadata=metadata))


def _init_weights_file(source: str) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"init: {source} is neither a finished run folder (with model.safetensors) nor a "
            ".safetensors file"
        )
    return path


def load_init(model: nn.Module, source: str) -> list[str]:
    """Copy the weights of a run folder / .safetensors file into ``model``.

    Parameter names are matched as they are, or under the model's unary network
    (``model.unary_attr``: an FCN-8s run into CRF-as-RNN, a DeepLab run into the joint
    model). Names that are not in the model, or whose shapes differ, are an error naming
    them. Returns the names of the model's tensors that were loaded.
    """
    from ..models.io import _safetensors

    path = _init_weights_file(source)
    state = dict(_safetensors().load_file(str(path)))
    target = model.state_dict()
    prefixes = [""]
    if getattr(model, "unary_attr", None):
        prefixes.append(model.unary_attr + ".")
    best = None
    for prefix in prefixes:
        mapped = {prefix + k: v for k, v in state.items()}
        missing = [k for k in mapped if k not in target]
        if best is None or len(missing) < len(best[1]):
            best = (mapped, missing)
    mapped, missing = best
    if missing:
        raise ValueError(
            f"init: {path} does not fit the model: {len(missing)} of its tensors have no "
            f"counterpart, e.g. {', '.join(missing[:8])}"
        )
    # in the model's own order (first layers first), not the file's alphabetical one
    wrong = [
        f"{k} {tuple(mapped[k].shape)} (model {tuple(v.shape)})"
        for k, v in target.items()
        if k in mapped and tuple(mapped[k].shape) != tuple(v.shape)
    ]
    if wrong:
        more = f"; and {len(wrong) - 8} more" if len(wrong) > 8 else ""
        raise ValueError(
            f"init: shapes in {path} do not fit the model (was it trained with another "
            f"width or number of classes?): {'; '.join(wrong[:8])}{more}"
        )
    model.load_state_dict(mapped, strict=False)
    return sorted(mapped)
