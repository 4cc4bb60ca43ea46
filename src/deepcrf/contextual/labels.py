"""Ground truth at feature-map resolution for the piecewise objective.

Rule (majority vote over proportional cells): an image of H x W pixels is cut into h x w
cells, node (i, j) covering rows ``floor(i H / h) .. floor((i+1) H / h) - 1`` and the analogous
columns; the node's label is the most frequent valid label among its pixels (ties go to the
smaller class index). A node becomes ``ignore_index`` when fewer than ``min_valid`` of its
pixels carry a valid label (void bands at object boundaries, crop padding).
"""

from __future__ import annotations

import torch


def downsample_labels(
    labels: torch.Tensor,
    size: tuple[int, int],
    num_classes: int,
    ignore_index: int = 255,
    min_valid: float = 0.5,
) -> torch.Tensor:
    """Majority-vote label maps (B, h, w) from pixel label maps (B, H, W)."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3 or labels.is_floating_point():
        raise ValueError("labels must be an integer (B, H, W) tensor of class indices")
    b, big_h, big_w = labels.shape
    h, w = size
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        raise ValueError(
            f"size must be between (1, 1) and the label size {(big_h, big_w)}, got {size}"
        )
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"min_valid must be a fraction in [0, 1], got {min_valid}")
    labels = labels.long()
    valid = labels != ignore_index
    if bool(((labels[valid] < 0) | (labels[valid] >= num_classes)).any()):
        raise ValueError(f"labels must be in [0, {num_classes}) or ignore_index={ignore_index}")
    device = labels.device
    rows = torch.arange(big_h, device=device) * h // big_h
    cols = torch.arange(big_w, device=device) * w // big_w
    cell = (rows.view(-1, 1) * w + cols.view(1, -1)).expand(b, -1, -1)
    cell = cell + torch.arange(b, device=device).view(-1, 1, 1) * (h * w)
    counts = torch.bincount(
        (cell[valid] * num_classes + labels[valid]), minlength=b * h * w * num_classes
    ).view(b * h * w, num_classes)
    pixels = torch.bincount(cell.reshape(-1), minlength=b * h * w)
    majority = counts.argmax(dim=1)
    enough = counts.sum(dim=1) >= min_valid * pixels
    enough &= counts.sum(dim=1) > 0
    out = torch.where(enough, majority, torch.full_like(majority, ignore_index))
    return out.view(b, h, w)
