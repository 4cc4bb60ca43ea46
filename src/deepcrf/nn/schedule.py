"""Schwing & Urtasun's two-stage schedule as optimizer parameter groups.

Stage 1 trains the unary CNN alone (no pairwise terms: run the CNN without the CRF), with a
larger learning rate for the freshly initialised top layers (paper: 0.01 top, 0.001 rest,
momentum 0.9, weight decay 5e-4). Stage 2 trains CNN and CRF jointly, each with its own
learning rate; the CRF parameters (compatibility, kernel weights, log-bandwidths) get no
weight decay, which would pull them towards 0 (no smoothing) rather than towards Potts.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["two_stage_param_groups"]


def two_stage_param_groups(
    cnn: nn.Module,
    crf: nn.Module,
    stage: int,
    *,
    top: Sequence[str] = (),
    lr_unary: float = 1e-3,
    lr_top: float = 1e-2,
    lr_joint: float = 1e-4,
    lr_crf: float = 1e-3,
    weight_decay: float = 5e-4,
) -> list[dict]:
    """Parameter groups for ``torch.optim`` (each group has a ``name``; empty ones dropped).

    Args:
        cnn, crf: the unary network and the ``DenseCRF`` layer.
        stage: 1 (unary only: ``crf`` parameters are left out) or 2 (joint).
        top: name prefixes of the ``cnn`` parameters trained with ``lr_top`` in stage 1
            (e.g. ``top=("fc8.",)`` for the DeepLab models of ``deepcrf.models``, whose
            classifier is ``fc8``); each must match at least one parameter.
        lr_unary / lr_top: stage-1 rates of the other / top CNN layers.
        lr_joint / lr_crf: stage-2 rates of the CNN / the CRF.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage: expected 1 (unary only) or 2 (joint), got {stage!r}")
    for name, value in (
        ("lr_unary", lr_unary),
        ("lr_top", lr_top),
        ("lr_joint", lr_joint),
        ("lr_crf", lr_crf),
    ):
        if not value > 0:
            raise ValueError(f"{name}: expected a positive learning rate, got {value!r}")
    if isinstance(top, str):
        top = (top,)
    named = [(n, p) for n, p in cnn.named_parameters() if p.requires_grad]
    crf_ids = {id(p) for p in crf.parameters()}
    if any(id(p) in crf_ids for _, p in named):
        raise ValueError("crf: shares parameters with cnn; pass the unary network alone as cnn")
    for prefix in top:
        if not any(n.startswith(prefix) for n, _ in named):
            raise ValueError(f"top: no trainable cnn parameter starts with {prefix!r}")
    if stage == 1:
        is_top = [any(n.startswith(p) for p in top) for n, _ in named]
        groups = [
            {
                "name": "unary",
                "params": [p for (_, p), t in zip(named, is_top) if not t],
                "lr": lr_unary,
                "weight_decay": weight_decay,
            },
            {
                "name": "unary_top",
                "params": [p for (_, p), t in zip(named, is_top) if t],
                "lr": lr_top,
                "weight_decay": weight_decay,
            },
        ]
    else:
        groups = [
            {
                "name": "unary",
                "params": [p for _, p in named],
                "lr": lr_joint,
                "weight_decay": weight_decay,
            },
            {
                "name": "crf",
                "params": [p for p in crf.parameters() if p.requires_grad],
                "lr": lr_crf,
                "weight_decay": 0.0,
            },
        ]
    return [g for g in groups if g["params"]]
