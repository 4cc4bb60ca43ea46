"""Atomic writes and stem pairing."""

import os
import stat

import pytest

from deepcrf.fileio import (
    TEMP_MARKER,
    atomic_write,
    atomic_write_text,
    files_by_stem,
    remove_stale_temps,
)


def test_atomic_write_replaces_whole_file_with_umask(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_write_leaves_old_content_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_temp_keeps_suffix_and_stale_temps_are_removed(tmp_path):
    seen = []
    atomic_write(tmp_path / "a.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".png" and TEMP_MARKER in seen[0].name
    stale = tmp_path / f".b.png{TEMP_MARKER}123.png"
    stale.write_bytes(b"half")
    assert remove_stale_temps(tmp_path) == [stale]
    assert (tmp_path / "a.png").exists()


def test_files_by_stem_duplicates_are_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.JPG").write_bytes(b"")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "c.txt").write_bytes(b"")
    assert set(files_by_stem(tmp_path, [".png", ".jpg"], "images")) == {"a", "b"}
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"images: .*a\.jpg and a\.png"):
        files_by_stem(tmp_path, [".png", ".jpg"], "images")
    with pytest.raises(FileNotFoundError, match="images"):
        files_by_stem(tmp_path / "nope", [".png"], "images")


def test_remove_stale_temps_of_named_outputs_only(tmp_path):
    mine = tmp_path / f".a.png{TEMP_MARKER}x1.png"
    other = tmp_path / f".b.png{TEMP_MARKER}x2.png"
    for p in (mine, other):
        p.write_text("half")
    assert remove_stale_temps(tmp_path, ["a.png"]) == [mine]
    assert other.exists()
    assert remove_stale_temps(tmp_path) == [other]


def test_same_file_sees_through_links(tmp_path):
    from deepcrf.fileio import same_file

    a = tmp_path / "a.json"
    a.write_text("{}")
    (tmp_path / "soft.json").symlink_to(a)
    os.link(a, tmp_path / "hard.json")
    assert same_file(a, tmp_path / "soft.json") and same_file(a, tmp_path / "hard.json")
    assert same_file(a, tmp_path / "sub" / ".." / "a.json")
    assert not same_file(a, tmp_path / "b.json")  # a path that does not exist yet


def test_inside_resolves_links_and_parents(tmp_path):
    from deepcrf.fileio import inside

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(data)
    assert inside(data / "sub" / "x.png", data)
    assert inside(data, data)
    assert inside(link / "x.json", data)  # through a symbolic link
    assert inside(data / ".." / "data" / "y", data)
    assert not inside(tmp_path / "data2" / "x", data)  # a sibling sharing the prefix
    assert not inside(tmp_path, data)
