"""The main job, ``deepcrf refine`` with no input: refine an embedded sample and explain it.

The sample is a procedural scene (``deepcrf.data.SyntheticScenes``) with its ground truth; the
CRF's input is what a stride-8 network predicts for it (``coarse_probabilities``: class scores
on a grid 8x coarser than the image, noisy, bilinearly upsampled). The demo prints the scores
before and after the CRF, accounts for every changed pixel (corrected, broken, or moved from
one wrong label to another), says what the CRF can and cannot repair, and writes a figure
(``demo_figure.comparison_figure``).
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepcrf.params import DEEPLAB_NAMES, PRESETS, CRFParams

__all__ = ["DEMO_DIR", "DemoResult", "pixel_changes", "run_demo"]

DEMO_DIR = Path("refine-demo")
#: The embedded sample: a 320x240 scene that holds all seven synthetic classes.
SCENE_SEED, SCENE_SIZE, STRIDE = 7, (240, 320), 8


@dataclass(frozen=True)
class PixelChanges:
    """What the CRF did to the label of each pixel (void pixels left out)."""

    total: int
    changed: int
    corrected: int  # wrong before, right after
    broken: int  # right before, wrong after
    wrong_to_wrong: int  # wrong before and after, another wrong label


def pixel_changes(before: np.ndarray, after: np.ndarray, gt: np.ndarray, void: int = 255):
    """Count changed pixels by kind; ``corrected + broken + wrong_to_wrong == changed``."""
    valid = gt != void
    changed = (before != after) & valid
    right_before, right_after = before == gt, after == gt
    return PixelChanges(
        total=int(valid.sum()),
        changed=int(changed.sum()),
        corrected=int((changed & right_after).sum()),
        broken=int((changed & right_before).sum()),
        wrong_to_wrong=int((changed & ~right_before & ~right_after).sum()),
    )


@dataclass
class DemoResult:
    """Everything the demo computed (returned for tests and notebooks)."""

    image: np.ndarray
    label: np.ndarray
    before: np.ndarray
    after: np.ndarray
    scores: tuple[dict, dict]
    changes: PixelChanges
    class_names: tuple[str, ...]
    seconds: float
    figure: Path


def _params_line(params: CRFParams) -> str:
    values = params.to_dict()
    same_kernels = (p.replace(iterations=params.iterations) for p in PRESETS.values())
    preset = next((n for n, p in zip(PRESETS, same_kernels) if p == params), None)
    named = ", ".join(f"{DEEPLAB_NAMES[k]}={_fmt(values[k])}" for k in DEEPLAB_NAMES)
    who = {"deeplab_largefov": "DeepLab-LargeFOV's", "pydensecrf": "pydensecrf's example"}.get(
        preset or "", "your"
    )
    return f"{who} parameters ({named}), {params.iterations} mean-field iterations"


def _fmt(value) -> str:
    if isinstance(value, list):
        return "/".join(_fmt(v) for v in value)
    return f"{value:g}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _wrap(text: str) -> str:
    return textwrap.fill(text, 92, initial_indent="  ", subsequent_indent="    ")


def _row(label: str, before: str, after: str) -> str:
    return f"  {label:<20}{before:>11}{after:>12}"


def run_demo(
    params: CRFParams | None = None, out: Path | None = None, device: str = "cpu"
) -> DemoResult:
    """Refine the embedded sample with ``params``, print the report, write the figure."""
    from deepcrf.cli.demo_figure import comparison_figure
    from deepcrf.data import SyntheticScenes, coarse_probabilities
    from deepcrf.dense import refine
    from deepcrf.fileio import atomic_write
    from deepcrf.metrics import ConfusionMatrix

    params = params or CRFParams()
    scenes = SyntheticScenes(1, size=SCENE_SIZE, seed=SCENE_SEED)
    image, label = scenes.generate(0)
    k, names = scenes.num_classes, tuple(scenes.classes[: scenes.num_classes])
    probs = coarse_probabilities(label, k, stride=STRIDE, noise=1.0, seed=0)
    dev = torch.device(device)
    probs_t = torch.from_numpy(probs).to(dev)
    image_t = torch.from_numpy(image).permute(2, 0, 1).to(dev)
    start = time.perf_counter()
    refined = refine(probs_t, image_t, **params.to_dict())
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    before, after = probs.argmax(0), refined.cpu().numpy().argmax(0)
    scores = tuple(ConfusionMatrix(k).update(p, label).scores() for p in (before, after))
    changes = pixel_changes(before, after, label)

    out_dir = Path(out) if out is not None else DEMO_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / "comparison.png"
    result = DemoResult(image, label, before, after, scores, changes, names, seconds, figure)
    picture = comparison_figure(image, label, before, after, names, scores, can_and_cannot(result))
    atomic_write(figure, lambda tmp: picture.save(tmp, format="PNG"))
    print(report(result, params))
    return result


def report(result: DemoResult, params: CRFParams) -> str:
    """The text the demo prints."""
    h, w = result.label.shape
    b, a = result.scores
    c = result.changes
    lines = [
        f"deepcrf refine: no input given; refining the embedded sample, a synthetic {w}x{h} "
        "scene",
        "  with its ground truth, to show what the dense CRF does.",
        _wrap(
            f"CRF input: class probabilities as a stride-{STRIDE} network predicts them "
            "(coarse grid, noisy, upsampled)."
        ),
        _wrap(f"CRF: {_params_line(params)}; took {result.seconds * 1e3:.0f} ms."),
        "",
        _row("", "before CRF", "after CRF"),
        _row("pixel accuracy", _percent(b["pixel_acc"]), _percent(a["pixel_acc"])),
        _row("mean IoU", _percent(b["miou"]), _percent(a["miou"])),
    ]
    for i, name in enumerate(result.class_names):
        if b["gt_pixels"][i]:
            lines.append(_row(f"  IoU {name}", _percent(b["iou"][i]), _percent(a["iou"][i])))
    lines += [
        "",
        f"  pixels changed: {c.changed} of {c.total} = {c.corrected} corrected "
        f"+ {c.broken} broken + {c.wrong_to_wrong} from one wrong label to another",
        "",
        *(_wrap(text) for text in can_and_cannot(result)),
        f"  Picture: {result.figure}",
        "    (image | ground truth | before | after | changed pixels, then a zoom on a boundary)",
    ]
    return "\n".join(lines)


def can_and_cannot(result: DemoResult) -> tuple[str, str]:
    """Two sentences: what the CRF repaired, and the thin structures it cannot bring back
    (with the pole class's numbers when the scene has poles)."""
    can = "What the CRF can fix: boundaries the input places roughly (they snap to colour edges)."
    never_saw = f"thin structures a stride-{STRIDE} network never saw"
    why = "it only reweighs the labels the input gives some probability"
    cannot = f"What it cannot: {never_saw}; {why}"
    if "pole" in result.class_names:
        pole = result.class_names.index("pole")
        where = result.label == pole
        if where.any():
            found = [float((p[where] == pole).mean()) for p in (result.before, result.after)]
            cannot = (
                f"What it cannot: {never_saw} (the 1-2 px poles: {found[0]:.0%} found before, "
                f"{found[1]:.0%} after): {why}. Mean IoU counts the pole class like the others, "
                "so it rises less than pixel accuracy"
            )
    return can, cannot + "."
