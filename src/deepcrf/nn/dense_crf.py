"""``DenseCRF``: the trainable fully connected CRF layer (CRF-as-RNN, Schwing & Urtasun).

The library's one mean-field loop (``deepcrf.crf.mean_field``) and one pairwise message
(``deepcrf.crf.Pairwise``) unrolled as a recurrent network over Gaussian kernels:

* a spatial (Gaussian) kernel on positions, a bilateral (appearance) kernel on positions
  and image values, and ``extra_kernels`` on user features; 2-D images or 3-D volumes with
  per-axis ``spacing``, any number of image channels;
* kernel weights are parameters: one per kernel ``(K, 1)``, per kernel and class
  ``(K, L)`` (``per_class_weights``, CRF-as-RNN) or full matrices ``(K, L, L)``
  (``full_kernel_weights``, CRF-as-RNN's released model); freeze them with
  ``requires_grad_(False)``;
* ``learn_compat``: a full L x L compatibility mu (asymmetric allowed) initialised to
  Potts, mu = -I;
* ``learn_bandwidths``: log-parametrised bandwidths of every kernel (Schwing & Urtasun).

Per pixel the message is ``-mu · sum_k W_k (K_k Q)`` (W_k = w_k·I, diag(w_k) or the full
matrix), i.e. in rows ``logits = unary - (sum_k (K_k Q) W_k^T) @ mu^T``. At initialisation
the layer computes what ``deepcrf.refine(unary_logits, image, logits=True, ...)`` computes
with the same parameters (``DenseCRF.from_params`` takes a ``CRFParams``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepcrf.crf import Kernel, Pairwise, mean_field
from deepcrf.features import bilateral_features, grid_features, grid_lattice, per_axis
from deepcrf.kernel import FILTERS, NORMALIZATIONS
from deepcrf.params import CRFParams

__all__ = ["DenseCRF"]

_DEFAULTS = CRFParams()
Number = float | Sequence[float]


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x`` (min/max propagate NaN; far cheaper than isfinite)."""
    low, high = torch.aminmax(x.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _count(value, name: str) -> int | None:
    """How many values a per-axis/per-channel argument lists (None for a single number)."""
    if isinstance(value, (int, float)):
        return None
    try:
        return len(value)
    except TypeError:
        raise ValueError(f"{name}: expected a number or a sequence of numbers") from None


def _feature_order(values: list[float], ndim: int) -> list[float]:
    """Per-axis values in the order of ``grid_features``' columns ((x, y) for 2-D)."""
    return values[::-1] if ndim == 2 else values


class DenseCRF(nn.Module):
    """Trainable dense CRF: ``forward(unary_logits, image, features)`` -> refined logits.

    Args:
        num_classes: L.
        iterations / eval_iterations: mean-field iterations in training / eval mode
            (the papers use 5 and 10).
        gaussian_sxy, gaussian_compat: spatial kernel bandwidth (a number or one per
            spatial axis, in axis order (rows, cols) / (depth, rows, cols), in the units of
            ``spacing``) and weight; a weight of 0 drops the kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: appearance kernel bandwidths
            (positions; a number or one per image channel for the values) and weight.
        spacing: voxel size per spatial axis (a number or one per axis), for anisotropic
            volumes; positions are index · spacing.
        extra_kernels: one entry d per extra Gaussian kernel on d-dimensional user
            features, passed to ``forward`` as ``features=[f1, ...]`` (bandwidths start at
            1: divide the features by your bandwidths, or learn them).
        extra_compat: initial weight of the extra kernels (a number or one per kernel).
        spatial_dims, image_channels: 2 or 3 spatial axes and the image's channel count
            (else from the sequence arguments above, else 2 and 3). With fixed bandwidths
            given as numbers any count works; learned ones given as numbers take the first
            input's counts while untrained (the Parameter objects stay the same).
        per_class_weights: one weight per kernel and class (CRF-as-RNN).
        full_kernel_weights: a full (L, L) weight matrix W_k per kernel, initialised to
            w_k·I (CRF-as-RNN's released model has full spatial and bilateral 21x21
            matrices).
        learn_compat: learn a full (L, L) compatibility initialised to Potts (-I).
        learn_bandwidths: learn every kernel's bandwidths (log-parametrised).
        filter: "lattice" (fast, float32) or "exact" (brute force O(N^2), any float dtype,
            exact gradients; for small inputs and checks).
        normalization: kernel normalisation, as in ``deepcrf.kernel``.
        recompute: gradient checkpointing of the iterations (``mean_field(checkpoint=True)``):
            less memory, ~1.3x time.

    Parameters (names are stable; converters map onto them): ``kernel_weights`` (K, 1),
    (K, L) or (K, L, L) in ``kinds`` order; ``compat`` (L, L) or None;
    ``{kind}_log_bandwidths`` (learned) or buffers ``{kind}_bandwidths`` in feature order
    ((x, y) then channels for 2-D images, as pydensecrf; (depth, rows, cols) for volumes).
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        eval_iterations: int = _DEFAULTS.iterations,
        gaussian_sxy: Number = _DEFAULTS.gaussian_sxy,
        gaussian_compat: float = _DEFAULTS.gaussian_compat,
        bilateral_sxy: Number = _DEFAULTS.bilateral_sxy,
        bilateral_srgb: Number = _DEFAULTS.bilateral_srgb,
        bilateral_compat: float = _DEFAULTS.bilateral_compat,
        spacing: Number = 1.0,
        extra_kernels: Sequence[int] = (),
        extra_compat: Number = 1.0,
        spatial_dims: int | None = None,
        image_channels: int | None = None,
        per_class_weights: bool = False,
        full_kernel_weights: bool = False,
        learn_compat: bool = False,
        learn_bandwidths: bool = False,
        filter: str = "lattice",
        normalization: str = "symmetric",
        recompute: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        for name, value in (("iterations", iterations), ("eval_iterations", eval_iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if filter not in FILTERS:
            raise ValueError(f"filter: expected one of {FILTERS}, got {filter!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if per_class_weights and full_kernel_weights:
            raise ValueError("per_class_weights and full_kernel_weights: choose one of them")
        self.num_classes = num_classes
        self.iterations = iterations
        self.eval_iterations = eval_iterations
        self.filter = filter
        self.normalization = normalization
        self.recompute = recompute
        self.learn_bandwidths = learn_bandwidths

        self.spatial_dims = self._resolve(
            "spatial_dims",
            spatial_dims,
            {"spacing": spacing, "gaussian_sxy": gaussian_sxy, "bilateral_sxy": bilateral_sxy},
            2,
        )
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: expected 2 or 3, got {self.spatial_dims}")
        self.image_channels = self._resolve(
            "image_channels", image_channels, {"bilateral_srgb": bilateral_srgb}, 3
        )
        if self.image_channels < 1:
            raise ValueError(f"image_channels: expected >= 1, got {self.image_channels}")
        # counts no argument states: with fixed bandwidths the layer takes any axis / channel
        # count; learned ones adapt to the first input until they have been trained
        axes_free = spatial_dims is None and all(
            _count(v, n) is None
            for n, v in (
                ("spacing", spacing),
                ("gaussian_sxy", gaussian_sxy),
                ("bilateral_sxy", bilateral_sxy),
            )
        )
        channels_free = image_channels is None and _count(bilateral_srgb, "srgb") is None
        self._any_axes = axes_free and not learn_bandwidths
        self._any_channels = channels_free and not learn_bandwidths
        self._adaptable = (axes_free, channels_free) if learn_bandwidths else (False, False)
        self._scalars = {
            "spacing": spacing,
            "gaussian_sxy": gaussian_sxy,
            "bilateral_sxy": bilateral_sxy,
            "bilateral_srgb": bilateral_srgb,
        }
        ndim = self.spatial_dims
        self.spacing = tuple(per_axis(spacing, ndim, "spacing"))
        extra = [self._extra_dim(d, i) for i, d in enumerate(extra_kernels)]
        extra_weights = per_axis(extra_compat, len(extra), "extra_compat") if extra else []

        kinds, weights, bandwidths = [], [], []
        if gaussian_compat != 0:
            kinds.append("gaussian")
            weights.append(float(gaussian_compat))
            bandwidths.append(_feature_order(per_axis(gaussian_sxy, ndim, "gaussian_sxy"), ndim))
        if bilateral_compat != 0:
            kinds.append("bilateral")
            weights.append(float(bilateral_compat))
            bandwidths.append(
                _feature_order(per_axis(bilateral_sxy, ndim, "bilateral_sxy"), ndim)
                + per_axis(bilateral_srgb, self.image_channels, "bilateral_srgb")
            )
        for i, (d, w) in enumerate(zip(extra, extra_weights)):
            kinds.append(f"extra{i}")
            weights.append(w)
            bandwidths.append([1.0] * d)
        self.kinds = tuple(kinds)
        self.extra_kernels = tuple(extra)
        w = torch.tensor(weights, dtype=torch.float32).reshape(len(kinds), 1)
        if per_class_weights:
            w = w.repeat(1, num_classes)
        if full_kernel_weights:
            w = w[:, :, None] * torch.eye(num_classes)
        #: kernel weights in ``kinds`` order: (K, 1) one per kernel, (K, L) per class, or
        #: (K, L, L) full matrices W_k (row = receiving label, column = filtered label)
        self.kernel_weights = nn.Parameter(w)
        if learn_compat:
            #: (L, L) compatibility mu: logits = unary - (sum_k (K_k Q) W_k^T) @ mu^T
            self.compat = nn.Parameter(-torch.eye(num_classes))
        else:
            self.register_parameter("compat", None)
        for kind, bw in zip(kinds, bandwidths):
            if learn_bandwidths:
                log_bw = torch.tensor(bw, dtype=torch.float64).log().float()
                self.register_parameter(f"{kind}_log_bandwidths", nn.Parameter(log_bw))
            else:  # fixed: kept as given, so features equal refine()'s bit for bit
                self.register_buffer(f"{kind}_bandwidths", torch.tensor(bw))

    def _initial_bandwidths(self, kind: str) -> list[float]:
        """A learnable kernel's initial bandwidths (feature order) for the current counts."""
        ndim, sc = self.spatial_dims, self._scalars
        if kind == "gaussian":
            return _feature_order(per_axis(sc["gaussian_sxy"], ndim, "gaussian_sxy"), ndim)
        return _feature_order(per_axis(sc["bilateral_sxy"], ndim, "bilateral_sxy"), ndim) + (
            per_axis(sc["bilateral_srgb"], self.image_channels, "bilateral_srgb")
        )

    def _adapt_counts(self, ndim: int, channels: int | None) -> None:
        """Learned bandwidths given as numbers (no count stated) take the first input's axis
        and channel counts, as long as they are untrained (initial values, no gradient)."""
        axes_free, channels_free = self._adaptable
        new_ndim = ndim if axes_free and ndim in (2, 3) else self.spatial_dims
        new_channels = channels if channels_free and channels else self.image_channels
        if (new_ndim, new_channels) == (self.spatial_dims, self.image_channels):
            return
        params = {
            k: getattr(self, f"{k}_log_bandwidths")
            for k in ("gaussian", "bilateral")
            if k in self.kinds
        }
        for kind, param in params.items():
            initial = torch.tensor(self._initial_bandwidths(kind), dtype=torch.float64).log()
            if param.grad is not None or not torch.equal(param.detach().cpu(), initial.to(param)):
                return  # trained: the checks below name the mismatch
        self.spatial_dims, self.image_channels = new_ndim, new_channels
        self.spacing = tuple(per_axis(self._scalars["spacing"], new_ndim, "spacing"))
        for kind, param in params.items():
            values = torch.tensor(self._initial_bandwidths(kind), dtype=torch.float64).log()
            param.data = values.to(device=param.device, dtype=param.dtype)

    @classmethod
    def from_params(cls, num_classes: int, params: CRFParams | None = None, **options) -> DenseCRF:
        """A layer starting from ``params`` (default ``CRFParams()``): its kernels, and its
        iterations as ``eval_iterations``; ``options`` are other constructor arguments."""
        p = params or CRFParams()
        kwargs = p.to_dict()
        kwargs["eval_iterations"] = kwargs.pop("iterations")
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if isinstance(kwargs[name], list):
                kwargs[name] = tuple(kwargs[name])
        return cls(num_classes, **{**kwargs, **options})

    @staticmethod
    def _resolve(name: str, explicit: int | None, sources: dict, default: int) -> int:
        counts = {k: c for k, v in sources.items() if (c := _count(v, k)) is not None}
        if explicit is not None:
            if isinstance(explicit, bool) or not isinstance(explicit, int):
                raise ValueError(f"{name}: expected an int, got {explicit!r}")
            counts[name] = explicit
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"{name}: the arguments disagree on the count: "
                + ", ".join(f"{k} has {c}" for k, c in counts.items())
            )
        return next(iter(counts.values())) if counts else default

    @staticmethod
    def _extra_dim(d, i: int) -> int:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"extra_kernels[{i}]: expected a feature dimension >= 1, got {d!r}")
        return d

    # ---------------------------------------------------------------- parameters
    def bandwidths(self, kind: str) -> torch.Tensor:
        """Current bandwidths of a kernel in feature order ((x, y[, channels]) for 2-D)."""
        if kind not in self.kinds:
            raise ValueError(f"kind: expected one of {self.kinds}, got {kind!r}")
        if self.learn_bandwidths:
            return getattr(self, f"{kind}_log_bandwidths").exp()
        return getattr(self, f"{kind}_bandwidths")

    def compatibility(self) -> torch.Tensor:
        """The (L, L) compatibility mu currently in use (Potts -I when not learned)."""
        if self.compat is not None:
            return self.compat
        return -torch.eye(self.num_classes, device=self.kernel_weights.device)

    def kernel_compat(self, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Kernel k's compatibility in ``deepcrf.crf``'s convention (message =
        -(K_k Q) @ mu_k^T): mu·W_k, as a diagonal vector (L,) when it is one."""
        w = self.kernel_weights[k].to(dtype)
        if self.compat is None:
            return -w.expand(self.num_classes) if w.dim() == 1 else -w
        mu = self.compat.to(dtype)
        return mu * w if w.dim() == 1 else mu @ w

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        unary_logits: torch.Tensor | Sequence[torch.Tensor],
        image: torch.Tensor | Sequence[torch.Tensor] | None = None,
        features: Sequence[torch.Tensor | Sequence[torch.Tensor]] | None = None,
    ):
        """Refined logits (B, L, *spatial) whose softmax is the mean-field marginals.

        ``unary_logits`` (B, L, *spatial) are scores (higher = more likely), 2 or 3 spatial
        axes; ``image`` (B, C, *spatial) the raw values (0..255 for photos, never the
        normalised network input), None when the bilateral kernel is off; ``features`` one
        (B, d_k, *spatial) tensor per extra kernel. Inputs of different sizes: lists of
        (L, *spatial_i), (C, *spatial_i) and, per extra kernel, a list of (d_k, *spatial_i);
        the output is then a list. Runs on the inputs' device, in float32 even under
        autocast (float64 inputs stay float64 with ``filter="exact"``).
        """
        unaries, images, extras, as_list = self._check_inputs(unary_logits, image, features)
        device = unaries[0].device
        exact64 = unaries[0].dtype == torch.float64 and self.filter == "exact"
        dtype = torch.float64 if exact64 else torch.float32
        with torch.autocast(device_type=device.type, enabled=False):
            shapes = [tuple(u.shape[1:]) for u in unaries]
            segments = [0]
            for u in unaries:
                segments.append(segments[-1] + u[0].numel())
            flat = torch.cat([u.to(dtype).reshape(self.num_classes, -1).t() for u in unaries])
            pairwise = self.pairwise(shapes, images, extras, segments, dtype)
            iterations = self.iterations if self.training else self.eval_iterations
            if iterations == 0:
                logits = flat
            else:
                # the loop's first T-1 updates, then the last update's logits only: the
                # softmax of those is the caller's business (cross-entropy, argmax)
                q = mean_field(flat, pairwise, iterations - 1, checkpoint=self.recompute)
                logits = pairwise.add_message(flat, q)
        if not as_list:
            b = len(shapes)
            return (
                logits.view(b, -1, self.num_classes)
                .transpose(1, 2)
                .reshape(b, self.num_classes, *shapes[0])
            )
        return [
            logits[a:b].t().reshape(self.num_classes, *shape)
            for a, b, shape in zip(segments, segments[1:], shapes)
        ]

    def pairwise(self, shapes, images, extras, segments, dtype) -> Pairwise:
        """The ``deepcrf.crf.Pairwise`` message of a batch (shapes, images as (C, *spatial),
        extra features per kernel and image as (d, *spatial))."""
        device = self.kernel_weights.device
        ndim = len(shapes[0])
        learned = self.learn_bandwidths and torch.is_grad_enabled()
        same_size = len(set(shapes)) == 1
        kernels = []
        for k, kind in enumerate(self.kinds):
            lattice = None
            scale_only = False
            if self.learn_bandwidths:
                raw = self._raw_features(kind, shapes, images, extras, ndim).to(dtype)
                scale_only = not raw.requires_grad  # only the bandwidths need f's gradient
                f = raw / self.bandwidths(kind).to(dtype)
                if not learned:
                    f = f.detach()
            elif kind == "gaussian":
                sxy, spacing = self._fixed_positions(kind, ndim)
                f = torch.cat([grid_features(s, sxy, spacing, device) for s in shapes])
                if self.filter == "lattice" and same_size:
                    lattice = grid_lattice(shapes[0], sxy, spacing, device, copies=len(shapes))
            elif kind == "bilateral":
                sxy, spacing = self._fixed_positions(kind, ndim)
                channels = images[0].shape[0]
                srgb = self._fixed_srgb(channels)
                f = torch.cat(
                    [bilateral_features(img.movedim(0, -1), sxy, srgb, spacing) for img in images]
                )
            else:
                raw = self._raw_features(kind, shapes, images, extras, ndim)
                f = raw / self.bandwidths(kind).to(raw)
            compat = self.kernel_compat(k, dtype)
            kernels.append(Kernel(f.to(dtype), compat, self.normalization, lattice, scale_only))
        return Pairwise(kernels, self.num_classes, segments, filter=self.filter)

    def _fixed_positions(self, kind: str, ndim: int) -> tuple[list[float], list[float]]:
        """(sxy, spacing) in axis order for ``features.grid_features``."""
        if ndim == self.spatial_dims:
            bw = self.bandwidths(kind).tolist()[:ndim]
            return _feature_order(bw, ndim), list(self.spacing)
        name = f"{kind}_sxy"
        return (
            per_axis(self._scalars[name], ndim, name),
            per_axis(self._scalars["spacing"], ndim, "spacing"),
        )

    def _fixed_srgb(self, channels: int) -> list[float]:
        if channels == self.image_channels:
            return self.bandwidths("bilateral").tolist()[-channels:]
        return per_axis(self._scalars["bilateral_srgb"], channels, "bilateral_srgb")

    def _raw_features(self, kind, shapes, images, extras, ndim) -> torch.Tensor:
        """Unscaled features (N, d): positions · spacing [+ image values], or user features."""
        device = self.kernel_weights.device
        if kind.startswith("extra"):
            i = int(kind[5:])
            return torch.cat([f.reshape(f.shape[0], -1).t() for f in extras[i]]).float()
        pos = torch.cat([grid_features(s, 1.0, self.spacing, device) for s in shapes])
        if kind == "gaussian":
            return pos
        values = torch.cat([img.reshape(img.shape[0], -1).t().float() for img in images])
        return torch.cat([pos, values], dim=1)

    # ---------------------------------------------------------------- input checks
    def _check_inputs(self, unary_logits, image, features):
        as_list = isinstance(unary_logits, (list, tuple))
        needs_image = "bilateral" in self.kinds
        if as_list:
            unaries = list(unary_logits)
            if not unaries:
                raise ValueError("unary_logits: expected at least one image")
            if image is None and not needs_image:
                image = [None] * len(unaries)
            if not isinstance(image, (list, tuple)) or len(image) != len(unaries):
                raise ValueError(
                    "image: expected a list of (C, *spatial) tensors as long as unary_logits"
                )
            images = list(image)
            lead = 0
        else:
            if not isinstance(unary_logits, torch.Tensor):
                raise TypeError(
                    f"unary_logits: expected a tensor, got {type(unary_logits).__name__}"
                )
            if unary_logits.dim() not in (4, 5):
                raise ValueError(
                    "unary_logits: expected (B, L, *spatial) with 2 or 3 spatial axes, got "
                    f"shape {tuple(unary_logits.shape)}"
                )
            b = unary_logits.shape[0]
            if image is None and not needs_image:
                image = [None] * b
            elif not isinstance(image, torch.Tensor):
                raise TypeError(f"image: expected a tensor, got {type(image).__name__}")
            elif image.dim() != unary_logits.dim():
                raise ValueError(
                    f"image: expected (B, C, *spatial) like unary_logits "
                    f"{tuple(unary_logits.shape)}, got shape {tuple(image.shape)}"
                )
            if len(image) != b:
                raise ValueError(f"image: batch size {len(image)} does not match unary_logits' {b}")
            unaries, images = list(unary_logits), list(image)
            lead = 1
        extras = self._check_features(features, len(unaries), as_list)
        if self.learn_bandwidths and isinstance(unaries[0], torch.Tensor):
            first = images[0] if needs_image and isinstance(images[0], torch.Tensor) else None
            self._adapt_counts(unaries[0].dim() - 1, None if first is None else first.shape[0])
        for i, u in enumerate(unaries):
            where = f"[{i}]" if as_list else ""
            if not isinstance(u, torch.Tensor) or u.dim() not in (3, 4):
                raise ValueError(f"unary_logits{where}: expected (L, *spatial) tensors")
            if not u.is_floating_point():
                raise TypeError(f"unary_logits: expected floating-point logits, got {u.dtype}")
            if u.shape[0] != self.num_classes:
                raise ValueError(
                    f"unary_logits{where}: expected {self.num_classes} classes on dim "
                    f"{lead}, got {u.shape[0]}"
                )
            if u.dim() != unaries[0].dim():
                raise ValueError("unary_logits: all images must have the same number of axes")
            if u.device != unaries[0].device:
                raise ValueError("unary_logits: all images must be on the same device")
            if not _all_finite(u):
                raise ValueError(f"unary_logits{where}: contains NaN or infinite values")
            self._check_axes(u.dim() - 1)
            spatial = tuple(u.shape[1:])
            if needs_image:
                self._check_image(images[i], spatial, where, u.device)
            for k, per_image in enumerate(extras):
                f = per_image[i]
                if tuple(f.shape[1:]) != spatial or f.shape[0] != self.extra_kernels[k]:
                    raise ValueError(
                        f"features[{k}]{where}: expected ({self.extra_kernels[k]}, "
                        f"{', '.join(map(str, spatial))}) per image, got {tuple(f.shape)}"
                    )
                if f.device != u.device:
                    raise ValueError(
                        f"features[{k}]{where}: on {f.device}, unary_logits on {u.device}"
                    )
                if not _all_finite(f):
                    raise ValueError(f"features[{k}]{where}: contains NaN or infinite values")
        if needs_image and len({img.shape[0] for img in images}) > 1:
            raise ValueError("image: all images must have the same number of channels")
        return unaries, images, extras, as_list

    def _check_axes(self, ndim: int) -> None:
        if ndim not in (2, 3):
            raise ValueError(f"unary_logits: expected 2 or 3 spatial axes, got {ndim}")
        if ndim != self.spatial_dims and not self._any_axes:
            raise ValueError(
                f"unary_logits: {ndim} spatial axes, but the layer was built for "
                f"{self.spatial_dims} (spatial_dims, or per-axis spacing / sxy)"
            )

    def _check_image(self, img, spatial, where, device) -> None:
        if not isinstance(img, torch.Tensor) or img.dim() != len(spatial) + 1:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(
                f"image{where}: expected (C, {', '.join(map(str, spatial))}) per image, got {shape}"
            )
        if tuple(img.shape[1:]) != spatial:
            raise ValueError(
                f"image{where}: spatial size {tuple(img.shape[1:])} does not match "
                f"unary_logits {spatial}"
            )
        channels = img.shape[0]
        if channels < 1 or (channels != self.image_channels and not self._any_channels):
            raise ValueError(
                f"image{where}: expected {self.image_channels} channels (one per "
                f"bilateral_srgb bandwidth / image_channels), got {channels}"
            )
        if img.is_floating_point() and not _all_finite(img):
            raise ValueError(f"image{where}: contains NaN or infinite values")
        if img.device != device:
            raise ValueError(f"image{where}: on {img.device}, unary_logits on {device}")

    def _check_features(self, features, batch: int, as_list: bool) -> list[list[torch.Tensor]]:
        """Per extra kernel, the list of its (d, *spatial) features per image."""
        count = len(self.extra_kernels)
        given = [] if features is None else list(features)
        if len(given) != count:
            raise ValueError(
                f"features: expected {count} tensor(s), one per extra kernel, got {len(given)}"
            )
        out = []
        for k, f in enumerate(given):
            if as_list:
                if not isinstance(f, (list, tuple)) or len(f) != batch:
                    raise ValueError(f"features[{k}]: expected a list of {batch} tensors")
                per_image = list(f)
            else:
                if not isinstance(f, torch.Tensor) or len(f) != batch:
                    raise ValueError(f"features[{k}]: expected a (B={batch}, d, *spatial) tensor")
                per_image = list(f)
            for i, t in enumerate(per_image):
                if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                    raise TypeError(f"features[{k}][{i}]: expected a floating-point tensor")
            out.append(per_image)
        return out

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, kernels={self.kinds}, iterations="
            f"{self.iterations}/{self.eval_iterations}, filter={self.filter!r}, "
            f"spatial_dims={self.spatial_dims}, image_channels={self.image_channels}, "
            f"kernel_weights={tuple(self.kernel_weights.shape)}, "
            f"learn_compat={self.compat is not None}, learn_bandwidths={self.learn_bandwidths}"
        )
