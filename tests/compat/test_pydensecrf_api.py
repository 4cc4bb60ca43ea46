"""Every public name of pydensecrf 1.1 exists in the shim; the unary classes, the logistic
unary and the enums behave like pydensecrf's."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import deepcrf.compat.pydensecrf.densecrf as ours

# dir() of pydensecrf 1.1 (pydensecrf2 1.1 on PyPI), dunders left out.
PYDENSECRF_NAMES = {
    "densecrf": [
        "CONST_KERNEL", "ConstUnary", "DIAG_KERNEL", "DenseCRF", "DenseCRF2D", "FULL_KERNEL",
        "KernelType", "LogisticUnary", "NORMALIZE_AFTER", "NORMALIZE_BEFORE",
        "NORMALIZE_SYMMETRIC", "NO_NORMALIZATION", "NormalizationType", "Number", "Unary",
        "eigen",
    ],
    "eigen": ["MatrixXf", "VectorXf", "matrixXf", "vectorXf"],
    "utils": [
        "Number", "_create_pairwise_bilateral_2d", "_create_pairwise_gaussian_2d",
        "compute_unary", "create_pairwise_bilateral", "create_pairwise_gaussian", "np",
        "softmax_to_unary", "unary_from_labels", "unary_from_softmax", "warning",
    ],
}  # fmt: skip
METHODS = {
    "DenseCRF": [
        "addPairwiseEnergy", "inference", "klDivergence", "setUnary", "setUnaryEnergy",
        "startInference", "stepInference",
    ],
    "DenseCRF2D": ["addPairwiseBilateral", "addPairwiseGaussian"],
}  # fmt: skip


def public(obj) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("__")}


@pytest.mark.parametrize("module", sorted(PYDENSECRF_NAMES))
def test_every_pydensecrf_name_imports_from_the_shim(module):
    shim = importlib.import_module(f"deepcrf.compat.pydensecrf.{module}")
    for name in PYDENSECRF_NAMES[module]:
        assert getattr(shim, name) is not None, f"{module}.{name}"
    try:
        reference = importlib.import_module(f"pydensecrf.{module}")
    except ImportError:
        return
    assert public(reference) <= public(shim), public(reference) - public(shim)
    assert set(PYDENSECRF_NAMES[module]) == public(reference)


def test_every_method_exists():
    for cls, names in METHODS.items():
        assert set(names) <= public(getattr(ours, cls))
    reference = pytest.importorskip("pydensecrf.densecrf")
    for cls in METHODS:
        assert public(getattr(reference, cls)) <= public(getattr(ours, cls))


def test_enums_match_pydensecrf():
    assert [(m.name, int(m)) for m in ours.KernelType] == [
        ("CONST_KERNEL", 0), ("DIAG_KERNEL", 1), ("FULL_KERNEL", 2),
    ]  # fmt: skip
    assert ours.NORMALIZE_SYMMETRIC is ours.NormalizationType.NORMALIZE_SYMMETRIC == 3
    reference = pytest.importorskip("pydensecrf.densecrf")
    for enum in ("KernelType", "NormalizationType"):
        assert [(m.name, int(m)) for m in getattr(reference, enum)] == [
            (m.name, int(m)) for m in getattr(ours, enum)
        ]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    weights = rng.normal(size=(3, 4)).astype(np.float32)
    features = rng.normal(size=(4, 120)).astype(np.float32)
    return image, weights, features


def _run(module, image, set_unary):
    d = module.DenseCRF2D(12, 10, 3)
    set_unary(module, d)
    d.addPairwiseBilateral(sxy=5, srgb=10, rgbim=image, compat=3)
    return np.array(d.inference(3))


def test_logistic_unary_is_weights_times_features():
    image, weights, features = _problem()
    const = _run(ours, image, lambda m, d: d.setUnaryEnergy(weights @ features))
    for set_unary in (
        lambda m, d: d.setUnary(m.LogisticUnary(weights, features)),
        lambda m, d: d.setUnaryEnergy(weights, features),
        lambda m, d: d.setUnary(m.ConstUnary(weights @ features)),
    ):
        np.testing.assert_allclose(_run(ours, image, set_unary), const, atol=1e-6)


def test_unaries_match_pydensecrf():
    reference = pytest.importorskip("pydensecrf.densecrf")
    image, weights, features = _problem(1)
    for set_unary in (
        lambda m, d: d.setUnary(m.LogisticUnary(weights, features)),
        lambda m, d: d.setUnary(m.ConstUnary(weights @ features)),
    ):
        np.testing.assert_allclose(
            _run(ours, image, set_unary), _run(reference, image, set_unary), atol=1e-5
        )
    # pydensecrf's setUnaryEnergy(u, f) insists on u being (nlabels, nvar): f is (nvar, nvar)
    u = np.random.default_rng(2).normal(size=(3, 120)).astype(np.float32)
    f = np.eye(120, dtype=np.float32)[::-1].copy()
    np.testing.assert_allclose(
        _run(ours, image, lambda m, d: d.setUnaryEnergy(u, f)),
        _run(reference, image, lambda m, d: d.setUnaryEnergy(u, f)),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda d: d.setUnary(np.zeros((3, 120), np.float32)), TypeError, "ConstUnary"),
        (lambda d: d.setUnary(ours.ConstUnary(np.zeros((3, 7), np.float32))), ValueError, "3, 120"),
        (lambda d: ours.LogisticUnary(np.zeros((3, 4)), np.zeros((5, 120))), ValueError, "f"),
        (lambda d: d.setUnaryEnergy(np.zeros((3, 4)), np.zeros((4, 7))), ValueError, "unary"),
        (lambda d: d.setUnaryEnergy(None), TypeError, "None"),
    ],
)
def test_bad_unaries_are_reported(call, error, match):
    with pytest.raises(error, match=match):
        call(ours.DenseCRF2D(12, 10, 3))
