"""Safe file output and file pairing: the library's one atomic-write helper and one rule for
matching files by name stem.

* ``atomic_write(path, write)``: the output appears complete under its final name or not at
  all. ``write`` fills a temporary file in the same folder (named ``.<name>.deepcrf-tmp-*``
  so that ``remove_stale_temps`` finds what a killed run left); the data are fsynced before
  the rename and the folder after it; the file gets the user's umask (not mkstemp's 0600).
* ``atomic_write_many([(path, write), ...])``: several outputs of one item committed as a
  unit: every temporary file is written and fsynced before the first rename, so a killed
  run leaves either none of the outputs (plus temporaries that ``remove_stale_temps``
  deletes) or all of the new ones, and ``outputs_complete`` tells a resumed run which.
* ``files_by_stem(folder, suffixes, what)``: stem -> path; two files with one stem (e.g.
  ``a.png`` and ``a.jpg``) are an error naming both, never a silent choice.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

__all__ = [
    "TEMP_MARKER",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_many",
    "atomic_write_text",
    "file_identity",
    "files_by_stem",
    "outputs_complete",
    "remove_stale_temps",
    "same_file",
]

#: Part of every temporary file name written by ``atomic_write``.
TEMP_MARKER = ".deepcrf-tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = True) -> Path:
    """Write ``path`` through a temporary file in its folder, then rename it into place.

    ``write(tmp_path)`` writes the whole content to ``tmp_path``, which keeps the final
    suffix so writers that choose the format from it (PIL, numpy) do the right thing.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    return atomic_write_many([(path, write)], fsync)[0]


def atomic_write_many(
    writes: Sequence[tuple[str | Path, Callable[[Path], object]]], fsync: bool = True
) -> list[Path]:
    """Write several files as a unit: all temporaries are written (in order) and fsynced,
    then renamed into place, then their folders fsynced. On any error before the renames,
    every temporary is removed and no final path is touched."""
    temps: list[tuple[Path, Path]] = []
    try:
        for target, write in writes:
            path = Path(target)
            folder = path.parent if str(path.parent) else Path(".")
            try:
                fd, tmp_name = tempfile.mkstemp(
                    dir=folder, prefix=f".{path.name}{TEMP_MARKER}", suffix=path.suffix
                )
            except OSError as exc:  # name the output, not the temporary
                raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
            os.close(fd)
            temps.append((Path(tmp_name), path))
            write(Path(tmp_name))
            os.chmod(tmp_name, 0o666 & ~_umask())
            if fsync:
                with open(tmp_name, "rb+") as handle:
                    os.fsync(handle.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
        if fsync:
            for folder in {path.parent for _, path in temps}:
                _fsync_dir(folder if str(folder) else Path("."))
    finally:
        for tmp, _ in temps:
            if tmp.exists():
                tmp.unlink()
    return [path for _, path in temps]


def outputs_complete(paths: Iterable[str | Path]) -> bool:
    """Whether every output of an item exists (a resumed run redoes the item otherwise)."""
    return all(Path(p).is_file() for p in paths)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``atomic_write`` of raw bytes."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def remove_stale_temps(folder: str | Path, only: Collection[str] | None = None) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder``; returns what was removed.

    ``only`` (final file names) limits this to the temporaries of those outputs, so a run
    over one shard of a shared folder leaves the other shards' writes in flight alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if only is not None and p.name[1:].split(TEMP_MARKER)[0] not in only:
            continue
        if p.name.startswith(".") and TEMP_MARKER in p.name and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # another worker cleaned it first
                pass
    return removed


def files_by_stem(folder: str | Path, suffixes: Iterable[str], what: str) -> dict[str, Path]:
    """Map stem -> file for the files in ``folder`` whose suffix (case-insensitive) is one
    of ``suffixes``; hidden files are skipped. Two files with the same stem are an error
    naming both (``what`` names the argument in messages)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: no such folder {folder}")
    wanted = {s.lower() for s in suffixes}
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in wanted or not p.is_file():
            continue
        if p.stem in found:
            raise ValueError(
                f"{what}: two files with the stem {p.stem!r} in {folder}: "
                f"{found[p.stem].name} and {p.name}; rename or remove one"
            )
        found[p.stem] = p
    return found


def file_identity(path: str | Path) -> set:
    """What makes two paths one file: the resolved path, and (device, inode) if it exists
    (so symbolic and hard links to one file are recognised)."""
    ids: set = {os.path.realpath(path)}
    try:
        st = Path(path).stat()
        ids.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    return ids


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (see ``file_identity``)."""
    return bool(file_identity(a) & file_identity(b))


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies anywhere under it (links resolved): an output
    there could replace an input or be read back as one."""
    target, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return target == root or root in target.parents
