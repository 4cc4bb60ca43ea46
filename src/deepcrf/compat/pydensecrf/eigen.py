"""pydensecrf.eigen equivalents: ``matrixXf``/``vectorXf`` and the ``MatrixXf``/``VectorXf``
wrappers that older scripts build and pass to ``setUnaryEnergy``/``addPairwiseEnergy``.

Same names and checks as pydensecrf 1.1: the input must be a float32 array of the right
number of dimensions (``ValueError`` otherwise, ``TypeError`` for ``None``); the wrapper holds
a copy of it, and ``np.array(wrapper)`` gives the values back. One leniency: non-contiguous
float32 arrays are copied instead of rejected.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MatrixXf", "VectorXf", "matrixXf", "vectorXf"]


class _EigenArray:
    """A float32 array wrapper that numpy (``np.array``, ``np.argmax``, ...) reads as an array."""

    _ndim = 0

    def __init__(self) -> None:
        self._data = np.zeros((0,) * self._ndim, np.float32)

    @classmethod
    def _wrap(cls, data: np.ndarray):
        obj = cls()
        obj._data = data
        return obj

    @property
    def shape(self) -> tuple[int, ...]:
        """The wrapped array's shape."""
        return self._data.shape

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype)

    def __buffer__(self, flags: int) -> memoryview:  # Python >= 3.12 buffer protocol
        return memoryview(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class MatrixXf(_EigenArray):
    """A float32 matrix (Eigen's column-major ``MatrixXf`` in pydensecrf)."""

    _ndim = 2


class VectorXf(_EigenArray):
    """A float32 vector (Eigen's ``VectorXf`` in pydensecrf)."""

    _ndim = 1


def _checked(arr, ndim: int) -> np.ndarray:
    if arr is None:
        raise TypeError("Argument 'arr' must not be None")
    data = np.asarray(arr)
    if data.ndim != ndim:
        raise ValueError(
            f"Buffer has wrong number of dimensions (expected {ndim}, got {data.ndim})"
        )
    if data.dtype != np.float32:
        raise ValueError(f"Buffer dtype mismatch, expected 'float' but got {data.dtype}")
    return data


def matrixXf(arr) -> MatrixXf:
    """A ``MatrixXf`` holding a copy of the 2-D float32 array ``arr``."""
    return MatrixXf._wrap(np.asfortranarray(_checked(arr, 2)).copy(order="F"))


def vectorXf(arr) -> VectorXf:
    """A ``VectorXf`` holding a copy of the 1-D float32 array ``arr``."""
    return VectorXf._wrap(np.array(_checked(arr, 1), copy=True))


def as_array(value) -> np.ndarray:
    """The numpy array behind ``value`` (an eigen wrapper or anything numpy converts)."""
    if isinstance(value, _EigenArray):
        return value._data
    return np.asarray(value)
