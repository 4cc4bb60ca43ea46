"""pydensecrf.densecrf equivalents: DenseCRF and DenseCRF2D on deepcrf's engine.

Same class and method names, argument names, defaults, constants, shapes and dtypes as
pydensecrf: unaries are (n_labels, N) energies, ``inference`` returns (n_labels, N)
float32 marginals. ``setUnaryEnergy(L, f)`` and ``LogisticUnary(L, f)`` are pydensecrf's
``LogisticUnaryEnergy``: the energies are the matrix product ``L @ f``.

Deliberate differences (README lists them): inputs are converted instead of rejected when
numpy can convert them (float64, non-contiguous or read-only arrays, float64 compatibility
vectors and matrices are fine and computed in float32); the result is a numpy array rather
than an Eigen wrapper (``np.array(Q)`` and ``np.argmax(Q, 0)`` work on both);
``stepInference`` updates ``Q`` in place and leaves ``tmp1``/``tmp2`` untouched; a ``Unary``
can be given to several CRFs (pydensecrf hands it over to the first one); and kernel
learning (gradients, ``KernelType`` parametrisations) lives in ``deepcrf.nn`` instead: every
kernel type infers alike, as in pydensecrf.
"""

from __future__ import annotations

from enum import IntEnum
from numbers import Number

import numpy as np
import torch

from deepcrf.arrays import tensor_from_numpy, transpose_copy
from deepcrf.compat.pydensecrf import eigen
from deepcrf.crf import Kernel, Pairwise, mean_field, mean_field_step
from deepcrf.features import bilateral_features, grid_features, grid_lattice

__all__ = [
    "CONST_KERNEL",
    "DIAG_KERNEL",
    "FULL_KERNEL",
    "NORMALIZE_AFTER",
    "NORMALIZE_BEFORE",
    "NORMALIZE_SYMMETRIC",
    "NO_NORMALIZATION",
    "ConstUnary",
    "DenseCRF",
    "DenseCRF2D",
    "KernelType",
    "LogisticUnary",
    "NormalizationType",
    "Number",
    "Unary",
    "eigen",
]


class NormalizationType(IntEnum):
    """How a kernel's messages are normalised (pydensecrf's enum of that name)."""

    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


class KernelType(IntEnum):
    """The learnable parametrisation of a kernel's features; inference ignores it."""

    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = NormalizationType
CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = KernelType
_NORMALIZATION_NAMES = {
    NO_NORMALIZATION: "none",
    NORMALIZE_BEFORE: "before",
    NORMALIZE_AFTER: "after",
    NORMALIZE_SYMMETRIC: "symmetric",
}


def _float_matrix(array, name: str, shape: tuple[int | None, int | None]) -> torch.Tensor:
    """A float32 torch view (or copy) of a 2-D real array with the expected shape."""
    arr = eigen.as_array(array)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim != 2 or any(
        want is not None and got != want for got, want in zip(arr.shape, shape)
    ):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"Bad shape for {name} (Need {want}, got {arr.shape})")
    return tensor_from_numpy(arr, np.float32)


def _compat(compat, num_labels: int):
    """pydensecrf's label compatibility: Potts number, diagonal vector or symmetrised matrix."""
    if isinstance(compat, Number):
        return float(compat)
    arr = np.asarray(eigen.as_array(compat), dtype=np.float32)
    if arr.ndim == 1 and arr.shape[0] == num_labels:
        return torch.from_numpy(arr.copy())
    if arr.ndim == 2 and arr.shape == (num_labels, num_labels):
        return torch.from_numpy(0.5 * (arr + arr.T))
    if arr.ndim > 2:
        raise ValueError("LabelCompatibility of dimension >2 not meaningful.")
    raise ValueError(
        f"compat: expected a number, a ({num_labels},) vector or a ({num_labels}, {num_labels}) "
        f"matrix, got shape {arr.shape}"
    )


def _check_kernel_args(kernel, normalization) -> str:
    if kernel not in (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL):
        raise ValueError(f"kernel: expected CONST_KERNEL, DIAG_KERNEL or FULL_KERNEL, got {kernel}")
    if normalization not in _NORMALIZATION_NAMES:
        raise ValueError(
            "normalization: expected NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER or "
            f"NORMALIZE_SYMMETRIC, got {normalization}"
        )
    return _NORMALIZATION_NAMES[normalization]


class Unary:
    """Base of the unary energies ``DenseCRF.setUnary`` takes."""

    def _matrix(self) -> torch.Tensor:
        raise NotImplementedError

    def _energy(self, nlabels: int, nvar: int) -> torch.Tensor:
        energy = self._matrix()
        if tuple(energy.shape) != (nlabels, nvar):
            raise ValueError(
                f"Bad shape for unary energy (Need {(nlabels, nvar)}, got {tuple(energy.shape)})"
            )
        return energy


class ConstUnary(Unary):
    """Fixed unary energies ``u`` (nlabels, nvar) (pydensecrf's ``ConstUnaryEnergy``)."""

    def __init__(self, u) -> None:
        if u is None:
            raise TypeError("u: expected an (nlabels, nvar) array of unary energies, got None")
        self._u = _float_matrix(u, "unary energy", (None, None))

    def _matrix(self) -> torch.Tensor:
        return self._u


class LogisticUnary(Unary):
    """Unary energies ``L @ f`` (pydensecrf's ``LogisticUnaryEnergy``): ``L`` (nlabels, F)
    weights, ``f`` (F, nvar) features."""

    def __init__(self, L, f) -> None:
        if L is None or f is None:
            raise TypeError("L and f: expected (nlabels, F) weights and (F, nvar) features")
        self._L = _float_matrix(L, "logistic unary weights L", (None, None))
        self._f = _float_matrix(f, "logistic unary features f", (self._L.shape[1], None))

    def _matrix(self) -> torch.Tensor:
        return self._L @ self._f


class DenseCRF:
    """A fully connected CRF over ``nvar`` variables with ``nlabels`` labels."""

    def __init__(self, nvar: int, nlabels: int, *_args, **_kwargs) -> None:
        if int(nvar) < 1 or int(nlabels) < 1:
            raise ValueError(f"nvar and nlabels must be positive, got {nvar} and {nlabels}")
        self._nvar = int(nvar)
        self._nlabel = int(nlabels)
        self._unary: torch.Tensor | None = None
        self._kernels: list[Kernel] = []
        self._pairwise: Pairwise | None = None

    def addPairwiseEnergy(
        self, features, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC
    ) -> None:
        """Add a Gaussian kernel on ``features`` (d, nvar), already divided by bandwidths."""
        feats = _float_matrix(features, "pairwise energy", (None, self._nvar))
        self._add(
            Kernel(
                feats.t(), _compat(compat, self._nlabel), _check_kernel_args(kernel, normalization)
            )
        )

    def _add(self, kernel: Kernel) -> None:
        self._kernels.append(kernel)
        self._pairwise = None

    def setUnary(self, u: Unary) -> None:
        """Set the unary from a ``ConstUnary`` or ``LogisticUnary``."""
        if not isinstance(u, Unary):
            raise TypeError(f"u: expected a ConstUnary or LogisticUnary, got {type(u).__name__}")
        self._unary = u._energy(self._nlabel, self._nvar)

    def setUnaryEnergy(self, u, f=None) -> None:
        """Set the unary energies ``u`` (nlabels, nvar): -log probabilities, lower = likelier.

        With ``f`` (pydensecrf's ``LogisticUnaryEnergy``) the energies are ``u @ f``: ``u`` is
        (nlabels, F) weights, ``f`` (F, nvar) features.
        """
        if u is None:
            raise TypeError("u: expected an (nlabels, nvar) array of unary energies, got None")
        unary = ConstUnary(u) if f is None else LogisticUnary(u, f)
        self._unary = unary._energy(self._nlabel, self._nvar)

    def _logits(self) -> torch.Tensor:
        """Unary logits (nvar, nlabels): the negated energies, zero when no unary is set."""
        if self._unary is None:
            return torch.zeros(self._nvar, self._nlabel)
        return transpose_copy(self._unary, scale=-1.0)

    def _get_pairwise(self) -> Pairwise:
        if self._pairwise is None:
            self._pairwise = Pairwise(self._kernels, self._nlabel)
            self._pairwise.release_kernels()  # no gradients here: the block stack suffices
        return self._pairwise

    def inference(self, niter: int) -> np.ndarray:
        """Marginals (nlabels, nvar) float32 after ``niter`` mean-field iterations."""
        q = mean_field(self._logits(), self._get_pairwise(), int(niter))
        return q.numpy().T  # column-major (nlabels, nvar), the layout pydensecrf returns

    def startInference(self):
        """(Q, tmp1, tmp2) to drive inference step by step; Q = softmax of the unaries."""
        q = torch.softmax(self._logits(), dim=1).numpy().T
        return q, np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)

    def stepInference(self, Q, tmp1=None, tmp2=None) -> None:
        """One mean-field iteration, updating the marginals ``Q`` (nlabels, nvar) in place."""
        q = eigen.as_array(Q)
        if q.shape != (self._nlabel, self._nvar) or not q.flags.writeable:
            raise ValueError(
                f"Q: expected the ({self._nlabel}, {self._nvar}) array from startInference"
            )
        current = tensor_from_numpy(q.T, np.float32)
        new, _ = mean_field_step(self._logits(), current, self._get_pairwise())
        q[...] = new.numpy().T

    def klDivergence(self, Q) -> float:
        """KL divergence (up to a constant) between the marginals ``Q`` and the CRF."""
        q = tensor_from_numpy(eigen.as_array(Q).T, np.float32).double()
        kl = (q * torch.log(q.clamp(min=1e-20))).sum()
        if self._unary is not None:
            kl += (self._unary.t().double() * q).sum()
        message = self._get_pairwise().message(q.float()).double()
        return float(kl - (q * message).sum())


class DenseCRF2D(DenseCRF):
    """A dense CRF over the pixels of a ``w`` x ``h`` image (row-major, N = w*h)."""

    def __init__(self, w: int, h: int, nlabels: int, *_args, **_kwargs) -> None:
        super().__init__(int(w) * int(h), nlabels)
        if int(w) < 1 or int(h) < 1:
            raise ValueError(f"w and h must be positive, got {w} and {h}")
        self._w, self._h = int(w), int(h)

    def addPairwiseGaussian(
        self, sxy, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC
    ) -> None:
        """Smoothness kernel on positions: bandwidth ``sxy`` (number or (sx, sy)) pixels."""
        sx, sy = (sxy, sxy) if isinstance(sxy, Number) else sxy
        norm = _check_kernel_args(kernel, normalization)
        lattice = grid_lattice((self._h, self._w), (float(sy), float(sx)))
        features = grid_features((self._h, self._w), (float(sy), float(sx)))
        self._add(Kernel(features, _compat(compat, self._nlabel), norm, lattice))

    def addPairwiseBilateral(
        self, sxy, srgb, rgbim, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC
    ) -> None:
        """Appearance kernel on (x/sx, y/sy, r/sr, g/sg, b/sb) of the uint8 image ``rgbim``."""
        sx, sy = (sxy, sxy) if isinstance(sxy, Number) else sxy
        sr, sg, sb = (srgb,) * 3 if isinstance(srgb, Number) else srgb
        image = np.asarray(rgbim)
        if image.ndim != 3 or image.shape[:2] != (self._h, self._w):
            raise ValueError(
                "Bad shape for pairwise bilateral "
                f"(Need {(self._h, self._w, 3)}, got {image.shape})"
            )
        if image.shape[2] != 3:
            raise ValueError(
                "addPairwiseBilateral only works for RGB images. For other types, use "
                "`utils.create_pairwise_bilateral` to construct your own pairwise energy and "
                "add it through `addPairwiseEnergy`."
            )
        if image.dtype != np.uint8:
            raise TypeError(f"rgbim: expected a uint8 image, got dtype {image.dtype}")
        features = bilateral_features(
            tensor_from_numpy(image), (float(sy), float(sx)), (float(sr), float(sg), float(sb))
        )
        norm = _check_kernel_args(kernel, normalization)
        self._add(Kernel(features, _compat(compat, self._nlabel), norm))
