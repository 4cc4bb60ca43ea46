"""``DenseCRF``: the trainable fully connected CRF layer (CRF-as-RNN, Schwing & Urtasun).

Mean-field iterations (``deepcrf.crf.mean_field``, the library's one loop) unrolled as a
recurrent network over a Gaussian (spatial) and a bilateral (appearance) kernel:

* kernel weights (one per kernel, or per kernel and class with ``per_class_weights`` as
  in CRF-as-RNN) are always parameters; freeze them with ``requires_grad_(False)``;
* ``learn_compat``: a full L x L compatibility mu (asymmetric allowed) initialised to
  Potts, mu = -I, so the message is -(sum_k w_k K_k Q) @ mu^T as in ``deepcrf.crf``;
* ``learn_bandwidths``: log-parametrised bandwidths, 2 spatial (x, y) for the Gaussian
  kernel and 5 (x, y, r, g, b) for the bilateral one (Schwing & Urtasun).

At initialisation the layer computes exactly what ``deepcrf.refine(unary_logits, image,
logits=True, iterations=...)`` computes with the same kernel parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepcrf.cache import ByteCache
from deepcrf.crf import NORMALIZATIONS, mean_field, mean_field_step
from deepcrf.features import grid_features, grid_lattice
from deepcrf.lattice import build_lattice
from deepcrf.nn.message import CRFMessage, ScaledKernel, scaled_kernel

__all__ = ["DenseCRF"]

Image = torch.Tensor


_GRID_KERNELS: ByteCache[ScaledKernel] = ByteCache("grid kernels")  # bounded, thread-safe


def _grid_kernel(shape, sxy, device, copies: int, normalization: str) -> ScaledKernel:
    """The normalised spatial kernel of ``copies`` images of ``shape``, from a small cache
    (it depends on nothing but the size and the fixed bandwidths)."""
    key = (tuple(shape), sxy, str(device), copies, normalization)
    return _GRID_KERNELS.get_or_create(
        key,
        lambda: scaled_kernel(
            grid_lattice(shape, sxy, device=device, copies=copies), normalization
        ),
    )


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x`` (min/max propagate NaN; far cheaper than isfinite)."""
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _pair(value: float | Sequence[float], count: int, name: str) -> list[float]:
    values = (
        [float(value)] * count if isinstance(value, (int, float)) else [float(v) for v in value]
    )
    if len(values) != count or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(
            f"{name}: expected a positive number or {count} positive numbers, got {value!r}"
        )
    return values


class DenseCRF(nn.Module):
    """Trainable dense CRF: ``forward(unary_logits, image)`` -> refined logits.

    Args:
        num_classes: L.
        iterations / eval_iterations: mean-field iterations in training / eval mode
            (the papers use 5 and 10).
        gaussian_sxy, gaussian_compat: spatial kernel bandwidth (pixels; a number or
            (rows, cols) as in ``refine``) and weight; a weight of 0 drops the kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel bandwidths
            (pixels, intensity levels) and weight.
        per_class_weights: one weight per kernel and class instead of per kernel.
        learn_compat: learn a full (L, L) compatibility initialised to Potts.
        learn_bandwidths: learn the 7 kernel bandwidths (log-parametrised).
        filter: "lattice" (fast, float32) or "exact" (brute force O(N^2), any float dtype,
            exact gradients; for small images and checks).
        normalization: kernel normalisation, as in ``deepcrf.crf``.
        recompute: keep only every ``chunk``-th iteration's marginals and recompute the
            others in the backward pass (torch.utils.checkpoint): less memory, ~1.5x time.
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        eval_iterations: int = 10,
        gaussian_sxy: float | Sequence[float] = 3.0,
        gaussian_compat: float = 3.0,
        bilateral_sxy: float | Sequence[float] = 80.0,
        bilateral_srgb: float | Sequence[float] = 13.0,
        bilateral_compat: float = 10.0,
        per_class_weights: bool = False,
        learn_compat: bool = False,
        learn_bandwidths: bool = False,
        filter: str = "lattice",
        normalization: str = "symmetric",
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        for name, value in (("iterations", iterations), ("eval_iterations", eval_iterations)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if filter not in ("lattice", "exact"):
            raise ValueError(f"filter: expected 'lattice' or 'exact', got {filter!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.num_classes = num_classes
        self.iterations = iterations
        self.eval_iterations = eval_iterations
        self.filter = filter
        self.normalization = normalization
        self.recompute = recompute
        self.learn_bandwidths = learn_bandwidths

        kinds, weights, bandwidths = [], [], []
        if gaussian_compat != 0:
            kinds.append("gaussian")
            weights.append(float(gaussian_compat))
            # sxy given in axis order (rows, cols) as in refine(); features are (x, y)
            bandwidths.append(_pair(gaussian_sxy, 2, "gaussian_sxy")[::-1])
        if bilateral_compat != 0:
            kinds.append("bilateral")
            weights.append(float(bilateral_compat))
            bandwidths.append(
                _pair(bilateral_sxy, 2, "bilateral_sxy")[::-1]
                + _pair(bilateral_srgb, 3, "bilateral_srgb")
            )
        self.kinds = tuple(kinds)
        w = torch.tensor(weights, dtype=torch.float32).reshape(len(kinds), 1)
        if per_class_weights:
            w = w.repeat(1, num_classes)
        #: (K, 1) or (K, L) kernel weights, K the active kernels in ``kinds`` order
        self.kernel_weights = nn.Parameter(w)
        if learn_compat:
            #: (L, L) compatibility mu, message = -(sum_k w_k K_k Q) @ mu^T
            self.compat = nn.Parameter(-torch.eye(num_classes))
        else:
            self.register_parameter("compat", None)
        for kind, bw in zip(kinds, bandwidths):
            if learn_bandwidths:
                log_bw = torch.tensor(bw, dtype=torch.float64).log().float()
                self.register_parameter(f"{kind}_log_bandwidths", nn.Parameter(log_bw))
            else:  # fixed: kept as given, so features equal refine()'s bit for bit
                self.register_buffer(f"{kind}_bandwidths", torch.tensor(bw))

    # ---------------------------------------------------------------- parameters
    def bandwidths(self, kind: str) -> torch.Tensor:
        """Current bandwidths of a kernel, feature order: (x, y) or (x, y, r, g, b)."""
        if self.learn_bandwidths:
            return getattr(self, f"{kind}_log_bandwidths").exp()
        return getattr(self, f"{kind}_bandwidths")

    def compatibility(self) -> torch.Tensor:
        """The (L, L) compatibility mu currently in use (Potts -I when not learned)."""
        if self.compat is not None:
            return self.compat
        return -torch.eye(self.num_classes, device=self.kernel_weights.device)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        unary_logits: torch.Tensor | Sequence[torch.Tensor],
        image: torch.Tensor | Sequence[torch.Tensor] | None,
    ):
        """Refined logits (B, L, H, W) whose softmax is the mean-field marginals.

        ``unary_logits`` (B, L, H, W) are scores (higher = more likely); ``image``
        (B, 3, H, W) the raw pixels, values 0..255 (never the normalised network input).
        Images of different sizes: pass lists of (L, H_i, W_i) and (3, H_i, W_i) tensors;
        the output is then a list. ``image`` may be None when the bilateral kernel is off
        (``bilateral_compat=0``). Runs on the inputs' device, in float32 even under
        autocast (float64 inputs stay float64 with ``filter="exact"``).
        """
        unaries, images, as_list = self._check_inputs(unary_logits, image)
        device = unaries[0].device
        dtype = (
            torch.float64
            if (unaries[0].dtype == torch.float64 and self.filter == "exact")
            else torch.float32
        )
        with torch.autocast(device_type=device.type, enabled=False):
            shapes = [tuple(u.shape[1:]) for u in unaries]
            sizes = [h * w for h, w in shapes]
            segments = [0]
            for s in sizes:
                segments.append(segments[-1] + s)
            flat = torch.cat([u.to(dtype).reshape(self.num_classes, -1).t() for u in unaries])
            message = self._message(shapes, images, segments, dtype, device)
            iterations = self.iterations if self.training else self.eval_iterations
            if iterations == 0:
                logits = flat
            elif self.recompute and torch.is_grad_enabled():
                logits = self._checkpointed(flat, message, iterations)
            else:
                # the loop's first T-1 updates, then the last update's logits only: the
                # softmax of those is the caller's business (cross-entropy, argmax)
                q = mean_field(flat, message, iterations - 1)
                logits = message.add_message(flat, q)
        if not as_list:
            b = len(shapes)
            return (
                logits.view(b, -1, self.num_classes)
                .permute(0, 2, 1)
                .reshape(b, self.num_classes, *shapes[0])
            )
        return [
            logits[a:b].t().reshape(self.num_classes, *shape)
            for a, b, shape in zip(segments, segments[1:], shapes)
        ]

    def _checkpointed(self, unary: torch.Tensor, message: CRFMessage, iterations: int):
        """The same iterations as ``mean_field``, checkpointed every ~sqrt(T) steps."""
        chunk = max(1, round(math.sqrt(iterations)))

        def run(q, count):
            logits = None
            for _ in range(count):
                q, logits = mean_field_step(unary, q, message)
            return q, logits

        q = torch.softmax(unary, dim=1)
        logits = unary
        done = 0
        while done < iterations:
            count = min(chunk, iterations - done)
            q, logits = checkpoint(run, q, count, use_reentrant=False)
            done += count
        return logits

    def _message(self, shapes, images, segments, dtype, device) -> CRFMessage:
        same_size = len(set(shapes)) == 1
        features, lattices, prepared = [], [], []
        for kind in self.kinds:
            bw = self.bandwidths(kind).to(dtype)
            learned = self.learn_bandwidths and torch.is_grad_enabled()
            if kind == "gaussian":
                # positions (x, y) in pixels, divided by the (x, y) bandwidths
                pos = torch.cat([grid_features(s, 1.0, device=device) for s in shapes]).to(dtype)
                f = pos / bw
                lattice = ready = None
                if self.filter == "lattice" and same_size and not self.learn_bandwidths:
                    sxy = tuple(bw.detach().flip(0).tolist())  # grid_lattice takes (rows, cols)
                    ready = _grid_kernel(shapes[0], sxy, device, len(shapes), self.normalization)
            else:
                raw = torch.cat(
                    [
                        torch.cat(
                            [
                                grid_features(s, 1.0, device=device),
                                img.reshape(3, -1).t().float(),
                            ],
                            dim=1,
                        )
                        for s, img in zip(shapes, images)
                    ]
                ).to(dtype)
                f = raw / bw
                lattice = ready = None
            if not learned:
                f = f.detach()
            if self.filter == "lattice" and ready is None:
                lattice = build_lattice(f.detach(), segments)
            features.append(f)
            lattices.append(lattice)
            prepared.append(ready)
        weights = self.kernel_weights.to(dtype).expand(len(self.kinds), self.num_classes)
        compat = None if self.compat is None else self.compat.to(dtype)
        return CRFMessage(
            features,
            weights,
            compat,
            segments,
            self.normalization,
            self.filter,
            lattices if self.filter == "lattice" else None,
            prepared,
        )

    def _check_inputs(self, unary_logits, image):
        as_list = isinstance(unary_logits, (list, tuple))
        if as_list and image is None and "bilateral" not in self.kinds:
            image = [None] * len(unary_logits)  # no appearance kernel: no image needed
        if as_list:
            if not isinstance(image, (list, tuple)) or len(image) != len(unary_logits):
                raise ValueError(
                    "image: expected a list of (3, H, W) tensors as long as unary_logits"
                )
            unaries, images = list(unary_logits), list(image)
            if not unaries:
                raise ValueError("unary_logits: expected at least one image")
            expected_dims = 3
        else:
            if not isinstance(unary_logits, torch.Tensor):
                raise TypeError(
                    f"unary_logits: expected a tensor, got {type(unary_logits).__name__}"
                )
            if unary_logits.dim() != 4:
                raise ValueError(
                    f"unary_logits: expected (B, L, H, W), got shape {tuple(unary_logits.shape)}"
                )
            if image is None and "bilateral" not in self.kinds:
                image = [None] * unary_logits.shape[0]  # no appearance kernel: no image needed
            elif not isinstance(image, torch.Tensor):
                raise TypeError(f"image: expected a tensor, got {type(image).__name__}")
            if isinstance(image, torch.Tensor) and image.dim() != 4:
                raise ValueError(f"image: expected (B, 3, H, W), got shape {tuple(image.shape)}")
            if len(image) != unary_logits.shape[0]:
                raise ValueError(
                    f"image: batch size {len(image)} does not match unary_logits' "
                    f"{unary_logits.shape[0]}"
                )
            unaries, images = list(unary_logits), list(image)
            expected_dims = 3
        for i, (u, img) in enumerate(zip(unaries, images)):
            where = f"[{i}]" if as_list else ""
            if not isinstance(u, torch.Tensor) or u.dim() != expected_dims:
                raise ValueError(f"unary_logits{where}: expected (L, H, W) tensors")
            if not u.is_floating_point():
                raise TypeError(f"unary_logits: expected floating-point logits, got {u.dtype}")
            if u.shape[0] != self.num_classes:
                raise ValueError(
                    f"unary_logits{where}: expected {self.num_classes} classes on dim "
                    f"{1 if not as_list else 0}, got {u.shape[0]}"
                )
            if not _all_finite(u):
                raise ValueError(f"unary_logits{where}: contains NaN or infinite values")
            if "bilateral" in self.kinds:
                if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
                    shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img)
                    raise ValueError(
                        f"image{where}: expected 3 colour channels (3, H, W) per image, got {shape}"
                    )
                if tuple(img.shape[1:]) != tuple(u.shape[1:]):
                    raise ValueError(
                        f"image{where}: spatial size {tuple(img.shape[1:])} does not match "
                        f"unary_logits {tuple(u.shape[1:])}"
                    )
                if img.is_floating_point() and not _all_finite(img):
                    raise ValueError(f"image{where}: contains NaN or infinite values")
                if img.device != unaries[0].device:
                    raise ValueError(
                        f"image{where}: on {img.device}, unary_logits on {unaries[0].device}"
                    )
            if u.device != unaries[0].device:
                raise ValueError("unary_logits: all images must be on the same device")
        return unaries, images, as_list

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, kernels={self.kinds}, iterations="
            f"{self.iterations}/{self.eval_iterations}, filter={self.filter!r}, "
            f"per_class_weights={self.kernel_weights.shape[1] > 1}, "
            f"learn_compat={self.compat is not None}, learn_bandwidths={self.learn_bandwidths}"
        )
