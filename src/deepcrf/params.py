"""``CRFParams``: the dense CRF's parameters, their names and defaults, stated once.

Every CRF command and API reads this object: ``deepcrf.refine`` takes its fields as keyword
arguments, ``deepcrf.nn.DenseCRF`` starts from them, the CLI builds its ``--gaussian-*`` /
``--bilateral-*`` / ``--iterations`` flags from it, and ``--crf-params FILE.json`` everywhere
reads the JSON of refine() keyword arguments that ``CRFParams.save`` writes (and that
``deepcrf crf-search`` reports as ``best``).

Parameter names follow pydensecrf; DeepLab (Chen et al. 2015, eq. 2) names the same
quantities differently. The mapping, documented once for the whole library:

====================  =================  ==========================================
deepcrf / pydensecrf  DeepLab            meaning
====================  =================  ==========================================
bilateral_compat      w1                 weight of the appearance (bilateral) kernel
bilateral_sxy         σα (sigma_alpha)   its spatial bandwidth, pixels
bilateral_srgb        σβ (sigma_beta)    its colour bandwidth, intensity levels
gaussian_compat       w2                 weight of the smoothness (spatial) kernel
gaussian_sxy          σγ (sigma_gamma)   its spatial bandwidth, pixels
====================  =================  ==========================================

Defaults are DeepLab-LargeFOV's published cross-validated values (w1=4, σα=121, σβ=5,
w2=3, σγ=3, 10 iterations): they do not hurt typical photos, unlike pydensecrf's example
values (10, 80, 13), which over-smooth (the pydensecrf drop-in keeps pydensecrf's own
behaviour). The best values depend on the network and the data: ``deepcrf crf-search``
chooses them from a validation set.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEEPLAB_NAMES", "PRESETS", "CRFParams"]

#: deepcrf name -> DeepLab's symbol (Chen et al. 2015, eq. 2).
DEEPLAB_NAMES: dict[str, str] = {
    "bilateral_compat": "w1",
    "bilateral_sxy": "σα",
    "bilateral_srgb": "σβ",
    "gaussian_compat": "w2",
    "gaussian_sxy": "σγ",
}

_HELP: dict[str, str] = {
    "iterations": "mean-field iterations",
    "gaussian_sxy": "spatial bandwidth of the smoothness kernel, pixels",
    "gaussian_compat": "weight of the smoothness kernel (0 drops it)",
    "bilateral_sxy": "spatial bandwidth of the appearance kernel, pixels",
    "bilateral_srgb": "colour bandwidth of the appearance kernel, intensity levels",
    "bilateral_compat": "weight of the appearance kernel (0 drops it)",
}

Number = float | Sequence[float]
#: a Potts weight, an (L,) diagonal or an (L, L) matrix (refine()'s compat conventions)
Compat = float | Sequence[float] | Sequence[Sequence[float]]


@dataclass(frozen=True)
class CRFParams:
    """Parameters of the two standard dense-CRF kernels and the mean field.

    Bandwidths are a number or one value per spatial axis (``*_sxy``) / per image channel
    (``bilateral_srgb``). Weights (``*_compat``) are refine()'s: a number w >= 0 is Potts
    (mu = -w·I), a list of L numbers v the diagonal mu = diag(v) (negative attracts; per-class
    weights w give v = -w), a list of L lists a full (L, L) mu (see ``deepcrf.crf``); the
    last two are what ``deepcrf crf-search --method fit`` writes with per-class weights or a
    learned compatibility.
    """

    iterations: int = 10
    gaussian_sxy: Number = 3.0
    gaussian_compat: Compat = 3.0
    bilateral_sxy: Number = 121.0
    bilateral_srgb: Number = 5.0
    bilateral_compat: Compat = 4.0

    def __post_init__(self) -> None:
        it = self.iterations
        if isinstance(it, bool) or not isinstance(it, numbers.Integral) or it < 0:
            raise ValueError(f"iterations: expected an integer >= 0, got {it!r}")
        object.__setattr__(self, "iterations", int(it))
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            object.__setattr__(self, name, _bandwidth(getattr(self, name), name))
        for name in ("gaussian_compat", "bilateral_compat"):
            object.__setattr__(self, name, _compat(getattr(self, name), name))

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """The refine() keyword arguments (JSON-serialisable)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> CRFParams:
        """A copy with some fields changed (validated like the constructor)."""
        return CRFParams.from_dict({**self.to_dict(), **changes})

    def deeplab(self) -> dict[str, Any]:
        """The same values under DeepLab's names (w1, σα, σβ, w2, σγ)."""
        return {DEEPLAB_NAMES[k]: v for k, v in self.to_dict().items() if k in DEEPLAB_NAMES}

    @classmethod
    def names(cls) -> list[str]:
        """The valid keyword names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "CRF parameters") -> CRFParams:
        """Build from refine() keyword arguments; unknown keys are an error listing the valid
        ones. Missing keys take the defaults."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of parameter names to values")
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"{source}: unknown parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(cls.names())}"
            )
        try:
            return cls(**dict(values))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> CRFParams:
        """Read a JSON file of refine() keyword arguments. A ``deepcrf crf-search`` output
        (with a ``best`` entry) is accepted too and its ``best`` is used."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"--crf-params: {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--crf-params: {path} is not a readable JSON file ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("best"), dict):
            data = data["best"]
        return cls.from_dict(data, source=f"--crf-params {path}")

    def save(self, path: str | Path) -> Path:
        """Write the refine() keyword arguments as JSON (atomically)."""
        from deepcrf.fileio import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ command line
    @staticmethod
    def add_arguments(parser: Any, defaults: CRFParams | None = None) -> None:
        """Add ``--crf-params`` and one flag per field to an argparse parser (or group).

        Flags left unset keep the value of ``--crf-params`` (or the defaults)."""
        base = defaults or CRFParams()
        parser.add_argument(
            "--crf-params",
            type=Path,
            metavar="FILE.json",
            help="JSON of refine() keyword arguments (e.g. the 'best' of deepcrf crf-search); "
            "flags below override single values",
        )
        for name in CRFParams.names():
            value = getattr(base, name)
            deeplab = f" [DeepLab {DEEPLAB_NAMES[name]}]" if name in DEEPLAB_NAMES else ""
            kind = int if name == "iterations" else float
            parser.add_argument(
                "--" + name.replace("_", "-"),
                type=kind,
                default=None,
                metavar="N" if kind is int else "X",
                help=f"{_HELP[name]}{deeplab} (default: {_plain(value)})",
            )

    @staticmethod
    def from_args(args: Any, defaults: CRFParams | None = None) -> CRFParams:
        """The parameters selected by the flags of ``add_arguments``."""
        path = getattr(args, "crf_params", None)
        params = CRFParams.load(path) if path is not None else (defaults or CRFParams())
        changes = {
            name: getattr(args, name)
            for name in CRFParams.names()
            if getattr(args, name, None) is not None
        }
        if not changes:
            return params
        try:
            return params.replace(**changes)
        except ValueError as exc:
            flag = next(iter(changes)).replace("_", "-")
            raise ValueError(f"--{flag}: {exc}") from None


def _bandwidth(value: Any, name: str) -> Number:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name}: expected a positive number or one per axis, got {value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{name}: expected positive numbers, got {value!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: bandwidths must be finite and > 0, got {value!r}")
        out.append(float(v))
    return out[0] if not isinstance(value, (list, tuple)) else tuple(out)


def _compat(value: Any, name: str) -> Compat:
    """A Potts weight >= 0, a vector, or a square matrix of finite numbers (tuples)."""

    def number(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name}: expected finite numbers, got {value!r}")
        return float(v)

    if not isinstance(value, (list, tuple)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        return float(value)
    if not value:
        raise ValueError(f"{name}: expected a number, L numbers or an L x L matrix, got []")
    if all(isinstance(row, (list, tuple)) for row in value):
        if any(len(row) != len(value) for row in value):
            raise ValueError(f"{name}: a compatibility matrix must be square (L lists of L)")
        return tuple(tuple(number(v) for v in row) for row in value)
    return tuple(number(v) for v in value)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


#: Published parameter sets, as refine() keyword arguments.
PRESETS: dict[str, CRFParams] = {
    "deeplab_largefov": CRFParams(),
    "deeplab": CRFParams(bilateral_compat=5.0, bilateral_sxy=50.0, bilateral_srgb=10.0),
    "deeplab_msc": CRFParams(bilateral_compat=3.0, bilateral_sxy=95.0, bilateral_srgb=3.0),
    "crfasrnn": CRFParams(
        bilateral_compat=5.0, bilateral_sxy=160.0, bilateral_srgb=3.0, gaussian_compat=3.0
    ),
    "pydensecrf": CRFParams(bilateral_compat=10.0, bilateral_sxy=80.0, bilateral_srgb=13.0),
}
