"""Progress of a command over many files: a bar whose rate and ETA count only the work still
to do (files skipped because their outputs exist are reported, never timed), the summary
line, and the clean stop on Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["close_bars", "progress", "summary"]

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, skipped: int = 0, unit: str = "img") -> Iterator[T]:
    """Iterate ``items`` (the files still to do) under a progress bar; ``skipped`` files that
    were already done appear in the bar's label only."""
    from tqdm import tqdm  # here: a --quiet run does not import it

    total = len(items) if isinstance(items, Sized) else None
    label = f"{desc} ({skipped} already done)" if skipped else desc
    return iter(tqdm(items, desc=label, unit=unit, total=total, dynamic_ncols=True))


def summary(verb: str, done: int, skipped: int, where: object, unit: str = "images") -> str:
    """``refined 3 images into out/ (2 already done, skipped; --overwrite redoes them)``."""
    text = f"{verb} {done} {unit} into {where}"
    if skipped:
        text += f" ({skipped} already done, skipped; --overwrite redoes them)"
    return text


def close_bars() -> None:
    """Close every open progress bar so that a message after an interruption starts on a
    line of its own."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # no bar without tqdm imported
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    sys.stderr.flush()
