"""The conversion engine: mapping tables from released weights to a deepcrf model's parameters.

A converter is a list of :class:`Rule`: one source layer (by name, with aliases) whose blobs go,
in order, to model parameters (:class:`Target`, possibly a slice of a parameter, possibly added
instead of copied, possibly transformed, e.g. negated). :func:`plan` checks a whole source
against the rules from the blob *shapes* only (so a 540 MB file is validated before anything
is copied): missing layers, shape mismatches (naming both shapes) and unused layers are
reported all at once. :func:`apply` then streams the blobs into the model.

Shapes fit when they are equal, equal after dropping leading 1s (Caffe's legacy 4-D blobs:
a bias stored as (1, 1, 1, 64), the CRF's (1, 1, 21, 21) matrices), or when an InnerProduct
matrix (out, in) meets a convolution (out, c, k, k) with in = c·k·k (Caffe's fc6 / fc7 before
net surgery; both are row-major over (c, k, k)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "ConversionError",
    "ConversionReport",
    "Plan",
    "Rule",
    "Target",
    "apply",
    "fit_shape",
    "plan",
    "rules_by_prefix",
]

Shape = tuple[int, ...]


class ConversionError(ValueError):
    """The source does not fit the requested architecture (the message lists every problem)."""


@dataclass(frozen=True)
class Target:
    """Where one blob goes: ``param`` (a name of ``model.state_dict()``), optionally a part.

    ``index``: an int (first-axis entry, e.g. one kernel of ``crf.kernel_weights``) or a
    ``(start, stop)`` range along ``axis``. ``add``: accumulate into the (zeroed) target
    instead of copying (several layers summing into one bias). ``scale``: multiply the values
    (e.g. -1 for a compatibility with the opposite sign convention).
    """

    param: str
    index: int | tuple[int, int] | None = None
    axis: int = 0
    add: bool = False
    scale: float = 1.0

    def __str__(self) -> str:
        text = self.param
        if isinstance(self.index, int):
            text += f"[{self.index}]"
        elif self.index is not None:
            lead = ":, " * self.axis
            text += f"[{lead}{self.index[0]}:{self.index[1]}]"
        if self.scale != 1.0:
            text = f"{self.scale:g} * {text}"
        return f"+= {text}" if self.add else text

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """The part of ``tensor`` this target writes."""
        if self.index is None:
            return tensor
        if isinstance(self.index, int):
            return tensor[self.index]
        return tensor.narrow(self.axis, self.index[0], self.index[1] - self.index[0])


@dataclass(frozen=True)
class Rule:
    """Source layer ``names[0]`` (or an alias) -> one target per blob (None: blob ignored)."""

    names: tuple[str, ...]
    targets: tuple[Target | None, ...]
    required: bool = True

    @staticmethod
    def simple(names: str | Sequence[str], *params: str | None, required: bool = True) -> Rule:
        """A rule copying blob i into parameter ``params[i]`` whole."""
        names = (names,) if isinstance(names, str) else tuple(names)
        targets = tuple(None if p is None else Target(p) for p in params)
        return Rule(names, targets, required)


def _strip_leading_ones(shape: Shape) -> Shape:
    i = 0
    while i < len(shape) - 1 and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


def fit_shape(source: Shape, target: Shape) -> bool:
    """Whether a blob of shape ``source`` can fill a tensor of shape ``target`` (see module)."""
    source, target = tuple(source), tuple(target)
    if source == target:
        return True
    s, t = _strip_leading_ones(source), _strip_leading_ones(target)
    if s == t:
        return True
    if len(s) == 2 and len(t) == 4 and s[0] == t[0] and s[1] == t[1] * t[2] * t[3]:
        return True  # InnerProduct (out, in) -> convolution (out, c, k, k)
    return False


def _fmt(shape: Iterable[int]) -> str:
    return str(tuple(int(d) for d in shape))


@dataclass
class ConversionReport:
    """What a conversion did, for printing."""

    source: str
    arch: str
    model: str
    mapped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary: mapped layers, layers left out, parameters kept at init."""
        out = [f"{self.source} -> {self.model} ({self.arch}): {len(self.mapped)} layers mapped"]
        out += [f"  mapped    {line}" for line in self.mapped]
        out += [f"  left out  {line}" for line in self.left_out]
        out += [f"  not in the source, kept as initialised: {p}" for p in self.initialised]
        out += [f"  note: {n}" for n in self.notes]
        return out


@dataclass
class Plan:
    """A validated conversion: the source layer chosen for each rule, and the report."""

    layers: dict[str, Rule]
    report: ConversionReport
    zeroed: list[str]


def _target_shape(state: Mapping[str, torch.Tensor], target: Target) -> Shape | None:
    if target.param not in state:
        return None
    return tuple(target.view(state[target.param]).shape)


def plan(
    shapes: Mapping[str, Sequence[Shape]],
    rules: Sequence[Rule],
    model: nn.Module,
    report: ConversionReport,
) -> Plan:
    """Check the source layer ``shapes`` against ``rules`` for ``model``; raise or plan.

    Raises :class:`ConversionError` listing missing layers, blob count / shape mismatches
    (both shapes named) and the source layers the rules do not use.
    """
    state = model.state_dict()
    chosen: dict[str, Rule] = {}
    missing, mismatched = [], []
    covered: set[str] = set()
    for rule in rules:
        name = next((n for n in rule.names if n in shapes), None)
        if name is None:
            if rule.required:
                missing.append(" / ".join(rule.names))
            continue
        blob_shapes = list(shapes[name])
        needed = sum(t is not None for t in rule.targets)
        if not needed <= len(blob_shapes) <= len(rule.targets):
            wanted = ", ".join("-" if t is None else str(t) for t in rule.targets)
            got = ", ".join(_fmt(s) for s in blob_shapes)
            mismatched.append(f"{name}: {len(blob_shapes)} blobs {got}; expected {wanted}")
            continue
        problems = []
        for i, (shape, target) in enumerate(zip(blob_shapes, rule.targets)):
            if target is None:
                continue
            want = _target_shape(state, target)
            if want is None:
                raise KeyError(f"converter bug: {target.param!r} is not a parameter of the model")
            if not fit_shape(shape, want):
                problems.append(
                    f"{name} blob {i}: source {_fmt(shape)} does not fit {target} {_fmt(want)}"
                )
        if problems:
            mismatched += problems
            continue
        chosen[name] = rule
        parts = []
        for shape, target in zip(blob_shapes, rule.targets):
            if target is not None:
                parts.append(f"{_fmt(shape)} -> {target}")
                covered.add(target.param)
        report.mapped.append(f"{name}: " + "; ".join(parts))
    unused = [n for n in shapes if n not in chosen]
    if missing or mismatched:
        lines = [f"{report.source} does not fit --arch {report.arch} ({report.model}):"]
        if mismatched:
            lines.append("  shape mismatches:")
            lines += [f"    {m}" for m in mismatched]
        if missing:
            lines.append("  layers missing from the source: " + ", ".join(missing))
        if unused:
            lines.append(
                "  source layers that --arch "
                f"{report.arch} does not use: "
                + ", ".join(f"{n} {' '.join(_fmt(s) for s in shapes[n])}" for n in unused)
            )
        raise ConversionError("\n".join(lines))
    for name in unused:
        report.left_out.append(f"{name}: " + ", ".join(_fmt(s) for s in shapes[name]))
    for name, value in state.items():
        if name not in covered:  # small ones (bandwidths from the architecture) with values
            small = value.numel() <= 8
            values = ", ".join(f"{v:g}" for v in value.flatten().tolist()) if small else ""
            report.initialised.append(f"{name} = ({values})" if small else name)
    targets = [t for r in chosen.values() for t in r.targets if t is not None]
    zeroed = sorted({t.param for t in targets if t.add})
    return Plan(chosen, report, zeroed)


def _as_tensor(blob: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(blob, torch.Tensor):
        return blob.detach()
    return torch.from_numpy(np.asarray(blob))


def apply(
    the_plan: Plan,
    layers: Iterable[tuple[str, Sequence[np.ndarray | torch.Tensor]]],
    model: nn.Module,
) -> None:
    """Copy the planned layers' blobs (streamed from ``layers``) into ``model``'s tensors."""
    state = model.state_dict()  # tensors share storage with the parameters / buffers
    seen = set()
    with torch.no_grad():
        for param in the_plan.zeroed:
            state[param].zero_()
        for name, blobs in layers:
            rule = the_plan.layers.get(name)
            if rule is None:
                continue
            seen.add(name)
            for blob, target in zip(blobs, rule.targets):
                if target is None:
                    continue
                dest = target.view(state[target.param])
                value = _as_tensor(blob).to(dest.dtype).reshape(dest.shape)  # a view if float32
                if target.scale != 1.0:
                    value = value * target.scale
                if target.add:
                    dest.add_(value)
                else:
                    dest.copy_(value)
    if seen != set(the_plan.layers):
        missing = sorted(set(the_plan.layers) - seen)
        raise ConversionError(f"source changed while converting: {', '.join(missing)} vanished")


def rules_by_prefix(
    pairs: Iterable[tuple[str | Sequence[str], str]], prefix: str = "", bias: bool = True
) -> list[Rule]:
    """Rules ``layer -> prefix+module.weight`` (and ``.bias``) for (layer, module) pairs."""
    out = []
    for names, module in pairs:
        params = [f"{prefix}{module}.weight"] + ([f"{prefix}{module}.bias"] if bias else [])
        out.append(Rule.simple(names, *params))
    return out

