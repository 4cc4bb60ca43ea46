"""pydensecrf.utils equivalents: unaries from probabilities or labels, pairwise features.

Same names, arguments, defaults, shapes and dtypes as pydensecrf's module of that name
(including its module-level ``np``, ``Number`` and ``warning`` and the two slow 2-D reference
functions). Differences: bad ``gt_prob``/``scale`` raise ``ValueError`` (pydensecrf: an
``assert``), and ``labels``/``sm`` may be anything numpy converts to an array.
"""

from __future__ import annotations

from logging import warning
from numbers import Number

import numpy as np

__all__ = [
    "Number",
    "compute_unary",
    "create_pairwise_bilateral",
    "create_pairwise_gaussian",
    "np",
    "softmax_to_unary",
    "unary_from_labels",
    "unary_from_softmax",
    "warning",
]


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """Unary energies (n_labels, N) float32 for a label map trusted with ``gt_prob``.

    With ``zero_unsure`` label 0 means "unknown" (uniform) and labels 1..n_labels map to
    classes 0..n_labels-1; otherwise labels are class indices.
    """
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob: must be in (0, 1), got {gt_prob}")
    labels = np.asarray(labels).flatten()
    n_energy = -np.log((1.0 - gt_prob) / (n_labels - 1))
    p_energy = -np.log(gt_prob)
    unary = np.full((n_labels, len(labels)), n_energy, dtype="float32")
    unary[labels - 1 if zero_unsure else labels, np.arange(unary.shape[1])] = p_energy
    if zero_unsure:
        unary[:, labels == 0] = -np.log(1.0 / n_labels)
    return unary


def compute_unary(labels, M, GT_PROB=0.5):
    """Deprecated alias of ``unary_from_labels`` (kept for old scripts)."""
    warning("pydensecrf.compute_unary is deprecated, use unary_from_labels instead.")
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """Unary energies -log(p) (n_classes, N) float32 from class probabilities (n_classes, ...).

    ``scale`` in (0, 1] mixes the probabilities with the uniform distribution; ``clip``
    bounds them below so that the logarithm stays finite.
    """
    sm = np.asarray(sm)
    num_cls = sm.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale: must be in (0, 1], got {scale}")
        sm = scale * sm + (1 - scale) * (np.ones(sm.shape) / num_cls)
    if clip is not None:
        sm = np.clip(sm, clip, 1.0)
    return -np.log(sm).reshape([num_cls, -1]).astype(np.float32)


def softmax_to_unary(sm, GT_PROB=1):
    """Deprecated alias of ``unary_from_softmax`` without clipping."""
    warning("pydensecrf.softmax_to_unary is deprecated, use unary_from_softmax instead.")
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def create_pairwise_gaussian(sdims, shape):
    """Positions divided by ``sdims`` per axis (axis order, rows first): (len(shape), N)."""
    mesh = np.array(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), dtype=np.float32)
    for axis, s in enumerate(sdims):
        mesh[axis] /= s
    return mesh.reshape([len(sdims), -1])


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """Positions over ``sdims`` then channels over ``schan``: (len(sdims) + C, N) float32.

    ``chdim`` is the channel axis of ``img`` (-1: no channel axis, a single channel).
    """
    img = np.asarray(img)
    if chdim == -1:
        feats = img[np.newaxis].astype(np.float32)
    else:
        feats = np.rollaxis(img, chdim).astype(np.float32)
    if isinstance(schan, Number):
        feats /= schan
    else:
        for channel, s in enumerate(schan):
            feats[channel] /= s
    mesh = np.array(
        np.meshgrid(*[np.arange(s) for s in feats.shape[1:]], indexing="ij"), dtype=np.float32
    )
    for axis, s in enumerate(sdims):
        mesh[axis] /= s
    stacked = np.concatenate([mesh, feats])
    return stacked.reshape([stacked.shape[0], -1])


def _create_pairwise_gaussian_2d(sx, sy, shape):
    """2-D reference of ``create_pairwise_gaussian``: (row / sx, column / sy), (2, H*W)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([rows / sx, cols / sy]).astype(np.float32).reshape([2, -1])


def _create_pairwise_bilateral_2d(sx, sy, sr, sg, sb, img):
    """2-D reference of ``create_pairwise_bilateral`` for an (H, W, 3) image: (5, H*W)."""
    img = np.asarray(img)
    rows, cols = np.meshgrid(np.arange(img.shape[0]), np.arange(img.shape[1]), indexing="ij")
    channels = [img[:, :, c].astype(np.float64) / s for c, s in enumerate((sr, sg, sb))]
    return np.stack([rows / sx, cols / sy, *channels]).astype(np.float32).reshape([5, -1])
