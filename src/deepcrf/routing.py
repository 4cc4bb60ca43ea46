"""How ``refine`` and ``refine_labels`` route a call after checking it (``deepcrf.inputs``):
a numpy batch (``batched=True``) is refined image by image, inputs beyond the memory budget
are refined in tiles (``deepcrf.tiling``), the rest goes on to the untiled CRF."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from deepcrf import tiling
from deepcrf.inputs import (
    EXACT_MAX_POINTS,
    batch_items,
    check_bandwidth,
    check_compat,
    check_image,
    check_integer,
    check_label_count,
    check_probs,
    needs_batch_loop,
)

__all__ = ["prepare_refine", "prepare_refine_labels"]


def _image_spatial(image: Any, probs: Any) -> tuple[int, ...] | None:
    """The spatial shape the image claims, in probs' convention (None: not decidable)."""
    if image is None:
        return None
    shape = tuple(image.shape)
    if isinstance(probs, np.ndarray):
        return shape if len(shape) == probs.ndim - 1 else shape[:-1]
    return shape[-2:]


def _check_layout(probs: Any, image: Any) -> None:
    """Channels-last probs (..., *spatial, L) are blamed on probs, not on the image."""
    spatial = _image_spatial(image, probs)
    if spatial is None or len(spatial) >= probs.ndim:
        return
    k = len(spatial)
    if tuple(probs.shape[-k:]) != spatial and tuple(probs.shape[-k - 1 : -1]) == spatial:
        expected = "(L, *spatial)" if isinstance(probs, np.ndarray) else "(B, L, H, W) / (L, H, W)"
        raise ValueError(
            f"probs: shape {tuple(probs.shape)} looks channels-last (labels on the last axis);"
            f" expected {expected} with labels before the spatial axes, e.g. "
            "probs.transpose(2, 0, 1) for an (H, W, L) array"
        )


def prepare_refine(refine_fn: Callable[..., Any], options: dict[str, Any]) -> Any:
    """Check ``refine``'s arguments (``options`` = its keyword arguments, updated in place
    with the checked values). Returns the result when the call is routed elsewhere (a
    numpy batch refined item by item, or a tiled refinement), else None."""
    strict = options.pop("strict", False)
    batched = options.pop("batched", None)
    tile = options.pop("tile", None)
    force = options.pop("force", False)
    for flag, value in (("strict", strict), ("force", force)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag}: expected True or False, got {value!r}")
    probs = options["probs"] = check_probs(options["probs"])
    image = options["image"] = check_image(options["image"], strict)
    label_axis = 1 if isinstance(probs, torch.Tensor) and probs.dim() == 4 else 0
    check_label_count(int(probs.shape[label_axis]), "probs")
    options["iterations"] = check_integer(options["iterations"], "iterations")
    for name in ("gaussian_compat", "bilateral_compat"):
        options[name] = check_compat(options[name], name)
    for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "spacing"):
        check_bandwidth(options[name], name)
    clip = options["clip"]
    if not isinstance(clip, numbers.Real) or not 0.0 < float(clip) < 1.0:
        raise ValueError(f"clip: expected a number in (0, 1), got {clip!r}")
    extra = []
    for k, item in enumerate(options["extra_kernels"]):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"extra_kernels[{k}]: expected a (features, compat) pair")
        features = item[0].detach() if isinstance(item[0], torch.Tensor) else item[0]
        extra.append((features, check_compat(item[1], f"extra_kernels[{k}] compat")))
    options["extra_kernels"] = extra
    _check_layout(probs, image)
    rest = {k: v for k, v in options.items() if k not in ("probs", "image")}
    if needs_batch_loop(probs, image, batched):
        images = batch_items(image, probs.shape[0], "image")
        return np.stack(
            [
                refine_fn(p, im, strict=strict, force=force, tile=tile, **rest)
                for p, im in zip(probs, images)
            ]
        )
    if (
        isinstance(probs, torch.Tensor)
        and batched is not None
        and bool(batched) != (probs.dim() == 4)
    ):
        raise ValueError(
            f"batched: torch probs of shape {tuple(probs.shape)} are "
            f"{'a batch (B, L, H, W)' if probs.dim() == 4 else 'one image (L, H, W)'}"
        )
    batch = probs.shape[0] if isinstance(probs, torch.Tensor) and probs.dim() == 4 else 1
    spatial = tuple(probs.shape[label_axis + 1 :])
    if options["filter"] == "exact" and not force and math.prod(spatial) > EXACT_MAX_POINTS:
        raise ValueError(
            f"filter: 'exact' filtering of {math.prod(spatial)} points per image needs an "
            f"N x N kernel (O(N^2) time; limit {EXACT_MAX_POINTS} points); use "
            "filter='lattice', or force=True to run it anyway"
        )
    planned = tiling.plan(spatial, int(probs.shape[label_axis]), options, tile, batch)
    if planned is not None:
        return tiling.refine_tiled(refine_fn, probs, image, rest, *planned)
    return None


def prepare_refine_labels(
    refine_labels_fn: Callable[..., Any],
    labels: np.ndarray | torch.Tensor,
    image: Any,
    num_labels: int,
    gt_prob: float,
    ignore_index: int | None,
    kwargs: dict[str, Any],
) -> Any:
    """``refine_labels``' routing (``kwargs`` updated in place): a numpy batch refined item
    by item, or label maps beyond the memory budget refined tile by tile (the unary of the
    whole map is never built). Returns the result when routed, else None."""
    labelled = {"gt_prob": gt_prob, "ignore_index": ignore_index}
    if needs_batch_loop(labels, image, kwargs.get("batched"), spatial_axis=0):
        kwargs.pop("batched")
        images = batch_items(image, labels.shape[0], "image")
        return np.stack(
            [
                refine_labels_fn(lab, im, num_labels, **labelled, **kwargs)
                for lab, im in zip(labels, images)
            ]
        )
    is_numpy = isinstance(labels, np.ndarray)
    if is_numpy:
        kwargs["batched"] = False  # decided above: one image or volume
    batch = labels.shape[0] if not is_numpy and labels.dim() == 3 else 1
    spatial = tuple(labels.shape) if is_numpy or labels.dim() != 3 else tuple(labels.shape[1:])
    options = {k: v for k, v in kwargs.items() if k != "tile"}
    planned = tiling.plan(spatial, num_labels, options, kwargs.get("tile"), batch)
    if planned is None:
        return None
    out_shape = (
        (labels.shape[0], num_labels, *spatial)
        if not is_numpy and labels.dim() == 3
        else (num_labels, *spatial)
    )

    def refine_tile(lab: Any, im: Any, **opts: Any) -> Any:
        return refine_labels_fn(lab, im, num_labels, **labelled, **opts)

    return tiling.refine_tiled(refine_tile, labels, image, options, *planned, out_shape=out_shape)
