"""The DenseCRF loss (Tang et al. 2018, "On Regularized Losses for Weakly-supervised CNN
Segmentation"; meng-tang/rloss's ``DenseEnergyLoss``), on the library's lattice.

For softmax outputs S (B, K, H, W) and images I, the loss is the relaxed dense-CRF (Potts)
energy with a bilateral kernel W,

    loss = weight * ( - sum_b sum_k S_bk^T W_b S_bk ) / B,
    W_ij = exp(-|p_i - p_j|^2 / 2 sigma_xy^2 - |I_i - I_j|^2 / 2 sigma_rgb^2)  (W_ii = 1),

and its gradient is d loss / d S_k = -2 * weight * W S_k / B (W symmetric). It is rloss's
definition, with its parameters (e.g. weight 2e-9 for scribbles, 1e-7 ..., sigma_rgb 15,
sigma_xy 100 or 80, scale_factor 0.5); see ``LATTICE_GAIN`` for how rloss's own filter
scaled W.

Why the value is negative: the Potts energy sum_{ij} W_ij [label_i != label_j] equals
sum_ij W_ij - sum_k S_k^T W S_k for one-hot S. The first sum does not depend on the network,
so rloss drops it and minimises the second term, -sum_k S_k^T W S_k, which is <= 0 and most
negative when pixels that are close in position and colour share a label. Only its
gradient matters; its value says how much of the image's affinity mass lies within segments.

Pixels outside ``roi`` (crop padding, ignored regions) are zeroed in S, so they neither
contribute nor receive a gradient. With ``scale_factor`` != 1 the loss runs on a resized copy
(images nearest, probabilities bilinear, roi nearest, sigma_xy scaled likewise), as rloss.

How W S is computed (``filter``):

* ``"exact"``: brute force, O(N^2) per image, in float64 (features too) for float64
  probabilities and float32 otherwise: the definition up to rounding.
* ``"lattice"``: the permutohedral lattice, linear time. Its kernel is not W: on these 5-D
  features (x, y, r, g, b) its peak is about half of W's and its tails are wider, so the raw
  lattice estimate of S^T W S is 0.44-0.64x brute force depending on the image (rloss's
  C++ filter, the same lattice, has this bias built into its published weights). The
  estimate is divided by ``LATTICE_GAIN``, the median ratio on photos at the sizes the
  lattice is used for, so it is unbiased on typical inputs; what remains is the lattice's
  shape error, about +-15% on the value and ~10% on the gradient (see
  benchmarks/bench_weak.py's table). To reproduce a run tuned with rloss's own code,
  multiply its weight by ``LATTICE_GAIN``.
* ``"auto"`` (default): exact when an image (after ``scale_factor``) has at most
  ``AUTO_EXACT_POINTS`` pixels, where O(N^2) is cheap, and the lattice otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.exact import exact_filter
from deepcrf.features import bilateral_features
from deepcrf.lattice import build_lattice

__all__ = ["AUTO_EXACT_POINTS", "FILTERS", "LATTICE_GAIN", "DenseCRFLoss"]

FILTERS = ("auto", "lattice", "exact")

#: ``filter="auto"`` computes W S exactly up to this many pixels per (resized) image: the
#: definition to rounding, at about 0.1 s of one CPU core per 64x64 image with 21 classes
#: (3-4x the lattice's time; on a GPU a few ms).
AUTO_EXACT_POINTS = 4096

#: The lattice's estimate of S^T W S over brute force on 5-D bilateral features: the median
#: on VOC photos (64x64 to 160x120, sigma_xy 5-50 px, sigma_rgb 5-30; range 0.49-0.63);
#: ``filter="lattice"`` divides by it.
LATTICE_GAIN = 0.57


class DenseCRFLoss(nn.Module):
    """rloss's DenseCRF loss as a module: ``loss(images, probs, roi=None)`` -> scalar.

    Args:
        weight: the loss weight (rloss's ``densecrfloss``).
        sigma_rgb: colour bandwidth, intensity levels of the raw 0..255 image.
        sigma_xy: spatial bandwidth in pixels of the full-size image.
        scale_factor: resize factor of the image, probabilities and roi before the loss.
        filter: "auto" (exact up to ``AUTO_EXACT_POINTS`` pixels per image, else the
            lattice), "lattice" (permutohedral, linear time, divided by ``LATTICE_GAIN``)
            or "exact" (O(N^2) brute force in the probabilities' dtype); see the module
            docstring.

    ``images`` (B, 3, H, W) raw pixels, ``probs`` (B, K, H, W) softmax probabilities in
    [0, 1], ``roi`` (B, H, W) of 0/1 (1 = take part). Runs on the tensors' device.
    """

    def __init__(
        self,
        weight: float,
        sigma_rgb: float,
        sigma_xy: float,
        scale_factor: float = 1.0,
        filter: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("sigma_rgb", sigma_rgb), ("sigma_xy", sigma_xy)):
            if not value > 0:
                raise ValueError(f"{name}: expected a bandwidth > 0, got {value}")
        if not 0 < scale_factor <= 1:
            raise ValueError(f"scale_factor: expected a factor in (0, 1], got {scale_factor}")
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        self.weight = float(weight)
        self.sigma_rgb = float(sigma_rgb)
        self.sigma_xy = float(sigma_xy)
        self.scale_factor = float(scale_factor)
        self.filter = filter

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, "
            f"scale_factor={self.scale_factor}, filter={self.filter!r}"
        )

    def forward(
        self, images: torch.Tensor, probs: torch.Tensor, roi: torch.Tensor | None = None
    ) -> torch.Tensor:
        images, probs, roi = _checked(images, probs, roi)
        sigma_xy = self.sigma_xy
        if self.scale_factor != 1.0:  # exactly rloss's resizing
            wide = probs.dtype == torch.float64
            images = F.interpolate(
                images.to(torch.float64 if wide else torch.float32), scale_factor=self.scale_factor
            )
            probs = F.interpolate(
                probs, scale_factor=self.scale_factor, mode="bilinear", align_corners=False
            )
            roi = F.interpolate(roi[:, None].float(), scale_factor=self.scale_factor)[:, 0]
            sigma_xy *= self.scale_factor
        b, k, h, w = probs.shape
        n = h * w
        exact = self.filter == "exact" or (self.filter == "auto" and n <= AUTO_EXACT_POINTS)
        masked = probs * roi[:, None].to(probs.dtype)  # S: outside the roi takes no part
        values = masked.permute(0, 2, 3, 1).reshape(b * n, k)
        pixels = images.permute(0, 2, 3, 1)
        wide = values.dtype == torch.float64  # float64 in, float64 brute force
        dtype = torch.float64 if exact and wide else torch.float32
        features = torch.cat(
            [bilateral_features(pixels[i], sigma_xy, self.sigma_rgb, dtype=dtype) for i in range(b)]
        )
        segments = [i * n for i in range(b + 1)]
        with torch.no_grad():
            if exact:
                filtered = exact_filter(features, values.detach().to(dtype), segments)
            else:
                lattice = build_lattice(features, segments)
                filtered = lattice.filter(values.detach()).div_(LATTICE_GAIN)
            filtered = filtered.to(values.dtype)  # W S, a constant for autograd
        # value -sum S.WS; the surrogate's gradient is -2 WS (rloss's), not W S + W^T S
        energy = 2.0 * (values * filtered).sum() - (values.detach() * filtered).sum()
        return -self.weight * energy / b


def _checked(images, probs, roi):
    if not isinstance(probs, torch.Tensor) or probs.dim() != 4:
        raise ValueError(
            f"probs: expected a (B, K, H, W) tensor of softmax probabilities, got "
            f"{tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__}"
        )
    if not probs.is_floating_point():
        raise TypeError(f"probs: expected floating-point probabilities, got {probs.dtype}")
    b, _, h, w = probs.shape
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != (b, 3, h, w):
        raise ValueError(
            f"images: expected ({b}, 3, {h}, {w}) raw pixels to match probs, got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    with torch.no_grad():
        if not torch.isfinite(probs).all():
            raise ValueError("probs: contains NaN or infinite values")
        low, high = (float(v) for v in torch.aminmax(probs.detach()))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"probs: expected probabilities in [0, 1] (a softmax), got range "
                f"{low:.4g}..{high:.4g}"
            )
    if roi is None:
        roi = torch.ones(b, h, w, device=probs.device, dtype=probs.dtype)
    else:
        if not isinstance(roi, torch.Tensor) or tuple(roi.shape) != (b, h, w):
            raise ValueError(
                f"roi: expected a ({b}, {h}, {w}) mask, got "
                f"{tuple(roi.shape) if isinstance(roi, torch.Tensor) else type(roi).__name__}"
            )
        if not ((roi == 0) | (roi == 1)).all():
            found = roi[(roi != 0) & (roi != 1)].unique()[:5].tolist()
            raise ValueError(f"roi: expected a binary mask of 0 and 1, found values {found}")
        roi = roi.to(device=probs.device)
    return images.to(probs.device), probs, roi
