"""Split list files: one sample name per line, or "image_path label_path" pairs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_list", "resolve_listed_path"]


def read_list(path: str | Path) -> list[list[str]]:
    """Non-empty lines of a split file, each split on whitespace (1 or 2 fields)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list: no such file {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ValueError(
                f"split list: {path}:{lineno}: expected 'name' or 'image label', got {line!r}"
            )
        rows.append(fields)
    return rows


def resolve_listed_path(entry: str, *bases: Path) -> Path:
    """An absolute path as is; else the first base under which the (slash-stripped) path
    exists; else under the first base (so the missing-file error shows a sensible path)."""
    p = Path(entry)
    if p.is_absolute() and p.exists():
        return p
    rel = entry.lstrip("/")
    for base in bases:
        cand = Path(base) / rel
        if cand.exists():
            return cand
    return Path(bases[0]) / rel if bases else p
