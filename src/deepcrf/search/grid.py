"""Parameter grids for the CRF search: validation, expansion, DeepLab's coarse-to-fine protocol.

A grid is a mapping from refine() keyword names (``deepcrf.params.CRFParams.names()``) to
lists of values; the points are the Cartesian product, in a canonical order (names in
CRFParams' declaration order, values in the order given), on top of fixed base parameters.
Every point is validated as a ``CRFParams`` before any work starts, so an unknown name lists
the valid ones and a non-positive bandwidth or negative iteration count is refused up front.

DeepLab's protocol (Chen et al. 2015, §4.1; ../RECIPES.md): w2 = 3 and σγ = 3 fixed, 10
mean-field iterations, a coarse grid w1 ∈ {3, 4, 5, 6, 8, 10}, σα ∈ 40:10:120,
σβ ∈ 3:1:10, then a fine grid around the best coarse point: on every searched axis the best
value and the midpoints to its two coarse neighbours (3 values per axis; an edge of the
coarse range also gets half a step and a step beyond it, where the optimum may lie).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepcrf.params import CRFParams

__all__ = [
    "COARSE_GRID",
    "DEEPLAB_BASE",
    "expand_grid",
    "fine_grid",
    "load_grid",
    "point_key",
    "validate_grid",
]

#: DeepLab's coarse grid (w1, σα, σβ), in deepcrf names.
COARSE_GRID: dict[str, list[float]] = {
    "bilateral_compat": [3.0, 4.0, 5.0, 6.0, 8.0, 10.0],
    "bilateral_sxy": [float(v) for v in range(40, 121, 10)],
    "bilateral_srgb": [float(v) for v in range(3, 11)],
}

#: The fixed parameters of DeepLab's search: w2 = 3, σγ = 3, 10 iterations.
DEEPLAB_BASE = CRFParams(iterations=10, gaussian_sxy=3.0, gaussian_compat=3.0)


def validate_grid(
    grid: Mapping[str, Any], base: CRFParams = DEEPLAB_BASE, source: str = "grid"
) -> dict[str, list[Any]]:
    """A checked copy of ``grid``: known names, non-empty lists, every value valid.

    Raises ValueError naming ``source`` and the offending name or value.
    """
    if not isinstance(grid, Mapping):
        raise ValueError(f"{source}: expected a mapping of parameter names to lists of values")
    if not grid:
        raise ValueError(f"{source}: the grid is empty; give at least one parameter and values")
    valid = CRFParams.names()
    unknown = sorted(set(grid) - set(valid))
    if unknown:
        raise ValueError(
            f"{source}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    checked: dict[str, list[Any]] = {}
    for name in valid:
        if name not in grid:
            continue
        values = grid[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            values = [values]
        values = list(values)
        if not values:
            raise ValueError(f"{source}: {name} has an empty list of values")
        normalised = []
        for value in values:
            try:
                params = base.replace(**{name: value})
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
            plain = params.to_dict()[name]
            if plain in normalised:
                raise ValueError(f"{source}: {name} lists the value {value!r} twice")
            normalised.append(plain)
        checked[name] = normalised
    return checked


def expand_grid(grid: Mapping[str, Sequence[Any]], base: CRFParams = DEEPLAB_BASE) -> list[dict]:
    """Every point of a validated grid as full refine() keyword arguments, canonical order."""
    names = [n for n in CRFParams.names() if n in grid]
    points = []
    for values in itertools.product(*(grid[n] for n in names)):
        points.append(base.replace(**dict(zip(names, values))).to_dict())
    return points


def point_key(params: Mapping[str, Any]) -> str:
    """A canonical string identifying a parameter point (results file key)."""
    return json.dumps(CRFParams.from_dict(params).to_dict(), sort_keys=True)


def fine_grid(coarse: Mapping[str, Sequence[Any]], best: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Values around ``best`` on every searched numeric axis: the best value and the
    midpoints to its two coarse neighbours. When the best lies on an edge of the coarse
    range the optimum may lie beyond it, so that side gets half a step and a full step
    outwards (bandwidths and weights stay > 0, iterations integers >= 0). Axes searched
    with one value and vector values stay as they are."""
    fine: dict[str, list[Any]] = {}
    for name, values in coarse.items():
        center = best[name]
        numeric = [v for v in values if isinstance(v, (int, float))]
        if len(numeric) < 2 or not isinstance(center, (int, float)) or center not in numeric:
            fine[name] = [center]
            continue
        ordered = sorted(numeric)
        i = ordered.index(center)
        candidates = [center]
        below = ordered[i - 1] if i > 0 else center - (ordered[1] - ordered[0])
        above = ordered[i + 1] if i + 1 < len(ordered) else center + (ordered[-1] - ordered[-2])
        candidates += [_midpoint(below, center, name), _midpoint(center, above, name)]
        if i == 0:
            candidates.append(below)
        if i + 1 == len(ordered):
            candidates.append(above)
        fine[name] = sorted({_plain_value(c, name) for c in candidates if _allowed(c, name)})
    return fine


def _allowed(value: float | None, name: str) -> bool:
    """Inside the parameter's range: counts and weights >= 0, bandwidths > 0."""
    if value is None:
        return False
    return value >= 0 if name == "iterations" or name.endswith("_compat") else value > 0


def _plain_value(value: float, name: str) -> float | int:
    return int(value) if name == "iterations" else round(float(value), 6)


def _midpoint(a: float, b: float, name: str) -> float | None:
    """The value halfway between two values (None: no integer strictly between)."""
    if name == "iterations":
        mid = (int(a) + int(b)) // 2
        return mid if int(a) < mid < int(b) else None
    return (a + b) / 2.0


def load_grid(path: str | Path, base: CRFParams = DEEPLAB_BASE) -> dict[str, list[Any]]:
    """Read a grid file: JSON (or YAML, with PyYAML installed) of value lists per name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--grid: {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--grid: reading {path} needs PyYAML (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--grid: {path} is not valid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--grid: {path} is not valid JSON ({exc})") from None
    return validate_grid(data if data is not None else {}, base, source=f"--grid {path}")
