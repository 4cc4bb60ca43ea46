"""The results file of a search: one JSON line per finished parameter point, appended as
points finish, so a killed search resumes where it stopped.

The first line identifies the search (grid, fixed parameters, a digest of the images...);
resuming with a file written by a different search is refused with the fields that differ.
A last line cut short by a kill is dropped when the file is reopened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepcrf.fileio import atomic_write_text

__all__ = ["ResultsLog"]

FORMAT = "deepcrf crf-search results v1"


class ResultsLog:
    """Finished points by key; ``path=None`` keeps them in memory only."""

    def __init__(self, path: str | Path | None, search: Mapping[str, Any]) -> None:
        self.path = Path(path) if path is not None else None
        self.search = json.loads(json.dumps(dict(search)))  # plain JSON values
        self.rows: dict[str, dict] = {}
        if self.path is None:
            return
        if self.path.exists():
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, _line({"format": FORMAT, "search": self.search}))

    def _resume(self) -> None:
        assert self.path is not None
        text = self.path.read_text()
        lines = text.split("\n")
        complete, partial = lines[:-1], lines[-1]  # text after the last newline is cut short
        if not complete:
            raise ValueError(f"results file {self.path}: empty or cut short; delete it to restart")
        try:
            header = json.loads(complete[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(
                f"results file {self.path}: not a deepcrf crf-search results file; "
                "refusing to resume or overwrite it (choose another --out or delete it)"
            )
        differs = _differences(header.get("search", {}), self.search)
        if differs:
            raise ValueError(
                f"results file {self.path} belongs to a different search ({'; '.join(differs)}); "
                "refusing to resume: delete it or choose another --out"
            )
        for number, line in enumerate(complete[1:], start=2):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.rows[row["key"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f"results file {self.path}: line {number} is damaged; delete the file to "
                    "restart the search"
                ) from None
        if partial:  # a line cut short by a kill: rewrite the file without it
            atomic_write_text(self.path, "\n".join(complete) + "\n")

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def append(self, row: Mapping[str, Any]) -> None:
        """Record a finished point (flushed and fsynced before returning)."""
        row = dict(row)
        self.rows[row["key"]] = row
        if self.path is None:
            return
        with open(self.path, "a") as handle:
            handle.write(_line(row))
            handle.flush()
            os.fsync(handle.fileno())


def _line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {_short(old.get(key))} in the file, {_short(new.get(key))} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
