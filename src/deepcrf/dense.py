"""Dense-CRF post-processing of class probabilities: ``refine`` and ``refine_labels``.

Parameters keep pydensecrf's names (DeepLab's names for the same quantities, and the
defaults, are stated once in ``deepcrf.params``); the defaults are ``CRFParams()``,
DeepLab-LargeFOV's cross-validated values (w1=4, σα=121, σβ=5, w2=3, σγ=3, 10 iterations).
``deepcrf.params.PRESETS["pydensecrf"].to_dict()`` gives pydensecrf's README values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from deepcrf.allocator import release_after
from deepcrf.arrays import tensor_from_numpy, transpose_copy
from deepcrf.crf import Kernel, Pairwise, mean_field
from deepcrf.features import bilateral_features, grid_features, grid_lattice
from deepcrf.inputs import check_integer, check_label_count, check_labels
from deepcrf.lattice import LatticeRangeError, build_lattice
from deepcrf.params import CRFParams
from deepcrf.routing import prepare_refine, prepare_refine_labels
from deepcrf.threads import adaptive

__all__ = ["refine", "refine_labels", "unary_from_labels", "unary_from_probs"]

ExtraKernel = tuple[Any, Any]
_DEFAULTS = CRFParams()


def unary_from_probs(
    probs: torch.Tensor, clip: float = 1e-5, inplace: bool = False
) -> torch.Tensor:
    """Unary logits log(max(p, clip)) from probabilities (labels on dim 0 or 1).

    ``inplace=True`` overwrites a float32 ``probs`` with the result (for a caller's own
    copy: no temporaries); other dtypes are converted as usual."""
    if inplace and probs.dtype == torch.float32:
        return probs.clamp_(min=clip, max=1.0).log_()
    return torch.log(probs.float().clamp(min=clip, max=1.0))


def unary_from_labels(
    labels: torch.Tensor, num_labels: int, gt_prob: float = 0.5, ignore_index: int | None = None
) -> torch.Tensor:
    """Unary logits (L, *labels.shape) for a label map trusted with probability ``gt_prob``.

    Each pixel's label gets probability ``gt_prob``, every other label an equal share of
    the rest; pixels equal to ``ignore_index`` get a uniform distribution ("unsure").
    """
    if isinstance(gt_prob, bool) or not isinstance(gt_prob, (int, float, np.floating)):
        raise TypeError(f"gt_prob: expected a probability in (0, 1), got {gt_prob!r}")
    if not 0.0 < gt_prob < 1.0:
        raise ValueError(f"gt_prob: expected a probability in (0, 1), got {gt_prob}")
    num_labels = check_integer(num_labels, "num_labels", minimum=2)
    labels = check_labels(labels if isinstance(labels, torch.Tensor) else np.asarray(labels))
    labels = torch.as_tensor(labels).long()
    unsure = labels == ignore_index if ignore_index is not None else None
    low, high = (int(v) for v in torch.aminmax(labels)) if labels.numel() else (0, 0)
    if low < 0 or high >= num_labels:  # one pass when every label is valid (the usual case)
        bad = (labels < 0) | (labels >= num_labels)
        if unsure is not None:
            bad &= ~unsure
        if bad.any():
            found = labels[bad].unique()[:5].tolist()
            raise ValueError(
                f"labels: values must be in [0, {num_labels}) (or ignore_index), got {found}"
            )
    other = np.log((1.0 - gt_prob) / (num_labels - 1))
    logits = torch.full((num_labels, *labels.shape), float(other), device=labels.device)
    index = labels if 0 <= low and high < num_labels else labels.clamp(0, num_labels - 1)
    logits.scatter_(0, index.unsqueeze(0), float(np.log(gt_prob)))
    if unsure is not None:
        logits[:, unsure] = float(np.log(1.0 / num_labels))
    return logits


@adaptive
def refine(
    probs: np.ndarray | torch.Tensor,
    image: np.ndarray | torch.Tensor | None = None,
    *,
    iterations: int = _DEFAULTS.iterations,
    gaussian_sxy: float | Sequence[float] = _DEFAULTS.gaussian_sxy,
    gaussian_compat: float | Any = _DEFAULTS.gaussian_compat,
    bilateral_sxy: float | Sequence[float] = _DEFAULTS.bilateral_sxy,
    bilateral_srgb: float | Sequence[float] = _DEFAULTS.bilateral_srgb,
    bilateral_compat: float | Any = _DEFAULTS.bilateral_compat,
    spacing: float | Sequence[float] = 1.0,
    extra_kernels: Sequence[ExtraKernel] = (),
    normalization: str = "symmetric",
    filter: str = "lattice",
    clip: float = 1e-5,
    logits: bool = False,
    strict: bool = False,
    batched: bool | None = None,
    tile: bool | int | None = None,
    force: bool = False,
):
    """Refine class probabilities with a fully connected CRF; returns the marginals.

    Accepted layouts (the output has the layout and array type of ``probs``):
      * numpy: ``probs`` (L, *spatial) float, ``image`` (*spatial, C) uint8 (H, W, 3 for a
        photo; any number of spatial axes, e.g. 3-D volumes with ``spacing`` per axis);
      * torch: ``probs`` (B, L, H, W) and ``image`` (B, C, H, W) with values 0..255
        (uint8 or float), or unbatched (L, H, W) with (C, H, W). Runs on their device.

    ``image`` must be the raw pixels, never the normalised network input. Set a
    ``*_compat`` to 0 to drop that kernel (``image`` may then be None). ``extra_kernels``
    adds (features, compat) pairs with features (*spatial, d) already divided by their
    bandwidths (depth, user features). ``logits=True`` treats ``probs`` as unnormalised
    scores (higher = more likely) instead of probabilities; probabilities are clipped
    below at ``clip`` before taking logs, as pydensecrf's ``unary_from_softmax`` does.
    Defaults: ``CRFParams()``; ``refine(p, img, **params.to_dict())`` applies a
    ``CRFParams`` (e.g. a ``--crf-params`` file or a ``PRESETS`` entry).

    Inputs are checked as ``deepcrf.inputs`` states (``strict=True`` turns its warnings
    about unlikely pixel units into errors; ``batched=True`` refines numpy (B, L, *spatial)
    item by item; ``force=True`` allows ``filter="exact"`` on large inputs). Inputs beyond
    the memory budget are refined in overlapping tiles (``deepcrf.tiling``; ``tile=False``
    never tiles, ``tile=True`` always, ``tile=<int>`` sets the tile core size).
    """
    options = dict(locals())
    routed = prepare_refine(refine, options)  # checks every argument; batch loop, tiles
    if routed is not None:
        return routed
    probs, image, iterations = options["probs"], options["image"], options["iterations"]
    gaussian_compat, bilateral_compat = options["gaussian_compat"], options["bilateral_compat"]
    extra_kernels = options["extra_kernels"]
    is_numpy = isinstance(probs, np.ndarray)
    q, img, batched = _as_batched(probs, image)
    _check_probs(q, logits)
    if iterations < 0:
        raise ValueError(f"iterations: expected >= 0, got {iterations}")
    b, num_labels = q.shape[:2]
    spatial = tuple(q.shape[2:])
    n = int(np.prod(spatial))
    # (B*N, L) unary logits: transposed first, then clipped and logged in place (no
    # (B, L, N) temporaries kept alive through the mean field: peak memory)
    unary = transpose_copy(q.reshape(b, num_labels, n).float()).view(b * n, num_labels)
    if not logits:
        unary = unary_from_probs(unary, clip, inplace=True)
    segments = [i * n for i in range(b + 1)]

    kernels = []
    if _active(gaussian_compat):
        lattice = (
            _named_lattice(
                "gaussian_sxy",
                gaussian_sxy,
                lambda: grid_lattice(spatial, gaussian_sxy, spacing, q.device, copies=b),
            )
            if filter == "lattice"
            else None
        )
        features = grid_features(spatial, gaussian_sxy, spacing, q.device).repeat(b, 1)
        kernels.append(Kernel(features, _compat(gaussian_compat, q.device), normalization, lattice))
    if _active(bilateral_compat):
        if img is None:
            raise ValueError("image: required for the bilateral kernel (or set bilateral_compat=0)")
        feats = torch.cat(
            [bilateral_features(img[i], bilateral_sxy, bilateral_srgb, spacing) for i in range(b)]
        )
        lattice = (
            _named_lattice(
                "bilateral_sxy / bilateral_srgb",
                (bilateral_sxy, bilateral_srgb),
                lambda: build_lattice(feats, segments),
            )
            if filter == "lattice"
            else None
        )
        kernels.append(Kernel(feats, _compat(bilateral_compat, q.device), normalization, lattice))
    for k, (features, compat) in enumerate(extra_kernels):
        f = torch.as_tensor(
            np.asarray(features) if not isinstance(features, torch.Tensor) else features
        )
        if tuple(f.shape[: len(spatial)]) != spatial or f.dim() != len(spatial) + 1:
            raise ValueError(
                f"extra_kernels[{k}]: features must have shape (*{spatial}, d), "
                f"got {tuple(f.shape)}"
            )
        f = f.to(q.device).float().reshape(n, -1).repeat(b, 1)
        lattice = (
            _named_lattice(f"extra_kernels[{k}]", None, lambda f=f: build_lattice(f, segments))
            if filter == "lattice"
            else None
        )
        kernels.append(Kernel(f, _compat(compat, q.device), normalization, lattice))

    pairwise = Pairwise(kernels, num_labels, segments, filter=filter)
    # inference only: the messages need the kernels' block stack alone; the per-kernel
    # lattices, scales and features go (about a fifth of the peak memory at VOC size)
    pairwise.release_kernels()
    kernels = lattice = features = feats = f = None
    marginals = mean_field(unary, pairwise, iterations)
    out = transpose_copy(marginals.view(b, n, num_labels)).view(b, num_labels, *spatial)
    if not batched:
        out = out[0]
    release_after(b * n * num_labels)  # large refinements: freed buffers back to the OS
    return out.cpu().numpy() if is_numpy else out


def _named_lattice(name: str, value: Any, build):
    """``build()``, with a key-range failure reported against the argument ``name``."""
    try:
        return build()
    except LatticeRangeError:
        what = "the features" if value is None else f"bandwidths {value!r}"
        raise ValueError(
            f"{name}: {what} scale the features beyond the lattice's range (|feature| "
            "above 1e7: bandwidths far too small for the features' range); use larger "
            "bandwidths"
        ) from None


def refine_labels(
    labels: np.ndarray | torch.Tensor,
    image: np.ndarray | torch.Tensor | None,
    num_labels: int,
    *,
    gt_prob: float = 0.5,
    ignore_index: int | None = None,
    **kwargs: Any,
):
    """Refine a label map trusted with probability ``gt_prob``; returns the marginals.

    ``labels`` is (*spatial) numpy or (B, H, W) / (H, W) torch; ``ignore_index`` pixels
    start uniform. Other keyword arguments are those of ``refine``.
    """
    labels = check_labels(labels)  # integers only (never truncated), detached
    num_labels = check_label_count(check_integer(num_labels, "num_labels", 2), "num_labels")
    routed = prepare_refine_labels(
        refine_labels, labels, image, num_labels, gt_prob, ignore_index, kwargs
    )
    if routed is not None:  # a numpy batch refined image by image, or tiles
        return routed
    is_numpy = isinstance(labels, np.ndarray)
    lab = tensor_from_numpy(labels) if is_numpy else labels
    if not is_numpy and lab.dim() == 3:
        unary = unary_from_labels(lab, num_labels, gt_prob, ignore_index).movedim(0, 1)
    else:
        unary = unary_from_labels(lab, num_labels, gt_prob, ignore_index)
    scores = unary.numpy() if is_numpy else unary
    return refine(scores, image, logits=True, **kwargs)


def _active(compat: Any) -> bool:
    if isinstance(compat, (int, float)):
        return compat != 0
    return True


def _compat(compat: Any, device: torch.device):
    if isinstance(compat, (int, float)):
        return float(compat)
    return (
        torch.as_tensor(np.asarray(compat) if not isinstance(compat, torch.Tensor) else compat)
        .float()
        .to(device)
    )


def _as_batched(probs, image):
    """(probs (B, L, *spatial), image (B, *spatial, C) or None, was_batched)."""
    if isinstance(probs, np.ndarray):
        if probs.ndim < 2:
            raise ValueError(f"probs: expected (L, *spatial), got shape {probs.shape}")
        q = tensor_from_numpy(probs)[None]
        img = None
        if image is not None:
            image = np.asarray(image)
            if image.ndim == probs.ndim - 1:  # single-channel image without channel axis
                image = image[..., None]
            if image.shape[:-1] != probs.shape[1:]:
                raise ValueError(
                    f"image: expected shape ({', '.join(map(str, probs.shape[1:]))}, C) to match "
                    f"probs {probs.shape}, got {image.shape}"
                )
            img = tensor_from_numpy(image)[None]
        return q, img, False
    if not isinstance(probs, torch.Tensor):
        raise TypeError(
            f"probs: expected a numpy array or torch tensor, got {type(probs).__name__}"
        )
    batched = probs.dim() == 4
    if probs.dim() not in (3, 4):
        raise ValueError(
            f"probs: expected (B, L, H, W) or (L, H, W), got shape {tuple(probs.shape)}"
        )
    q = probs if batched else probs[None]
    img = None
    if image is not None:
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(np.asarray(image))
        im = image if batched else image[None]
        if im.dim() != 4 or im.shape[0] != q.shape[0] or tuple(im.shape[2:]) != tuple(q.shape[2:]):
            raise ValueError(
                f"image: expected ({q.shape[0]}, C, {q.shape[2]}, {q.shape[3]}) to match probs "
                f"{tuple(probs.shape)}, got {tuple(image.shape)}"
            )
        img = im.to(q.device).movedim(1, -1)
    return q, img, batched


def _check_probs(q: torch.Tensor, logits: bool) -> None:
    if q.is_complex() or not (q.is_floating_point()):
        raise TypeError(f"probs: expected a floating-point array, got {q.dtype}")
    # two passes over the input (it can be large): min/max (NaN propagates into both),
    # then the label sums of probabilities
    low, high = (float(v) for v in torch.aminmax(q)) if q.numel() else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("probs: contains NaN or infinite values")
    if logits:
        return
    if low < 0:
        raise ValueError("probs: probabilities must be >= 0 (pass logits=True for scores)")
    sums = q.sum(dim=1)
    if (sums - 1).abs().max() > 1e-3:
        raise ValueError(
            "probs: must sum to 1 over the label axis "
            f"(sums range {sums.min():.4g}..{sums.max():.4g});"
            " normalise them or pass logits=True for unnormalised scores"
        )
