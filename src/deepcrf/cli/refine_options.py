"""``deepcrf refine``'s option rules: flags that do not go together are refused (never
silently ignored), the output format comes from ``--out``'s suffix, and a default output
never lands in an input folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = [
    "DEFAULT_OUT_DIR",
    "LABEL_DEFAULTS",
    "check_conflicts",
    "default_output",
    "label_png_path",
]

#: Defaults of the ``--labels``-only flags (their argparse default is None, so that giving
#: them with ``--probs`` can be refused).
LABEL_DEFAULTS = {"gt_prob": 0.5, "ignore_index": 255}
#: Where a single image's refined labels go without ``--out``: ``refined/<name>.png``.
DEFAULT_OUT_DIR = Path("refined")


def check_conflicts(args: argparse.Namespace) -> None:
    """Refuse flags that the chosen mode would ignore; then fill the ``--labels`` defaults."""
    given = [
        f"--{name.replace('_', '-')}" for name in LABEL_DEFAULTS if getattr(args, name) is not None
    ]
    if args.probs is not None:
        if args.num_labels is not None:
            given.insert(0, "--num-labels")
        if given:
            raise ValueError(
                f"{given[0]}: only applies to --labels; with --probs the number of classes and "
                "the confidences come from the probabilities"
            )
    if args.labels is not None and args.logits:
        raise ValueError("--logits: only applies to --probs (--labels are class indices)")
    if args.image is None:
        used = [
            flag for flag, value in (("--probs", args.probs), ("--labels", args.labels)) if value
        ]
        if used:
            raise ValueError(
                f"image: {used[0]} needs the image (or image folder) it belongs to, e.g. "
                f"deepcrf refine photo.jpg {used[0]} ...; without an image, refine runs its demo"
            )
    for name, value in LABEL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def label_png_path(out: Path) -> Path:
    """``out`` if it names a PNG; label maps are written as (palette) PNGs only."""
    if out.suffix.lower() != ".png":
        suffix = out.suffix or "no suffix"
        raise ValueError(
            f"--out: {out} has {suffix}; refined label maps are written as PNG (class indices "
            f"in a lossless palette image; JPEG would alter them): give a .png name, e.g. "
            f"{out.with_suffix('.png')}"
        )
    return out


def default_output(image: Path, inputs: list[Path]) -> Path:
    """``refined/<image name>.png`` in the working directory, unless that folder holds one of
    the ``inputs`` (then the user must choose with ``--out``)."""
    out = DEFAULT_OUT_DIR / (image.stem + ".png")
    for path in inputs:
        if os.path.realpath(path.parent) == os.path.realpath(out.parent):
            raise ValueError(
                f"--out: required here; the default output folder {DEFAULT_OUT_DIR}/ holds the "
                f"input {path}"
            )
    return out
