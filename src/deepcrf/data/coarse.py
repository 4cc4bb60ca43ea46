"""Coarse, noisy class probabilities from a label map: a stand-in for a stride-s CNN.

A DeepLab-like network predicts scores on a grid ``stride`` times coarser than the image
and upsamples them bilinearly, which blurs object boundaries and loses thin structures.
``coarse_probabilities`` reproduces exactly those failure modes from ground truth, so the
CRF's job (sharpening boundaries along colour edges) can be measured without a network.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["coarse_probabilities"]


def coarse_probabilities(
    label: np.ndarray | torch.Tensor,
    num_classes: int,
    stride: int = 8,
    confidence: float = 4.0,
    noise: float = 1.0,
    seed: int = 0,
    ignore_index: int = 255,
) -> np.ndarray | torch.Tensor:
    """Probabilities (K, H, W) float32 for a label map (H, W), or (B, K, H, W) for (B, H, W).

    One-hot labels are area-averaged onto a grid ``stride`` times coarser, scaled to logits
    by ``confidence``, perturbed by Gaussian noise of std ``noise`` (seeded), upsampled
    bilinearly and soft-maxed. Ignored pixels count as no class. Returns the input's type.
    """
    if stride < 1:
        raise ValueError(f"stride: expected >= 1, got {stride}")
    is_numpy = isinstance(label, np.ndarray)
    lab = torch.from_numpy(np.asarray(label)) if is_numpy else label
    batched = lab.dim() == 3
    if lab.dim() not in (2, 3):
        raise ValueError(f"label: expected (H, W) or (B, H, W), got shape {tuple(lab.shape)}")
    lab = (lab if batched else lab[None]).long()
    valid = lab != ignore_index
    if (lab[valid] >= num_classes).any() or (lab[valid] < 0).any():
        raise ValueError(f"label: values must be in [0, {num_classes}) or {ignore_index}")
    h, w = lab.shape[-2:]
    onehot = F.one_hot(lab.clamp(0, num_classes - 1), num_classes).movedim(-1, 1).float()
    onehot = onehot * valid[:, None]
    coarse = F.adaptive_avg_pool2d(onehot, (max(1, -(-h // stride)), max(1, -(-w // stride))))
    g = torch.Generator().manual_seed(seed)
    logits = confidence * coarse + noise * torch.randn(coarse.shape, generator=g)
    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    probs = torch.softmax(logits, dim=1)
    probs = probs if batched else probs[0]
    return probs.numpy() if is_numpy else probs
