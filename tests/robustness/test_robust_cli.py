"""deepcrf refine never writes over its inputs, commits an image's outputs as a unit and
turns every expected failure into one error line (issue 14, items 1-2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepcrf.cli import main
from deepcrf.data.io import read_image, read_label, write_label
from deepcrf.fileio import TEMP_MARKER

FAST = ["--iterations", "2"]


def _scene(seed: int, h: int = 20, w: int = 24, labels: int = 3):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    probs = rng.random((labels, h, w)).astype(np.float32)
    return image, probs / probs.sum(0)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def inputs(tmp_path):
    """photo.png + photo.npy, and folders imgs/ + probs/ with three pairs."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "probs").mkdir()
    for i in range(3):
        image, probs = _scene(i)
        Image.fromarray(image).save(tmp_path / "imgs" / f"s{i}.png")
        np.save(tmp_path / "probs" / f"s{i}.npy", probs)
    image, probs = _scene(9)
    Image.fromarray(image).save(tmp_path / "photo.png")
    np.save(tmp_path / "photo.npy", probs)
    (tmp_path / "link.png").symlink_to(tmp_path / "photo.png")
    return tmp_path


REFUSED = [
    (["photo.png", "--probs", "photo.npy", "--out", "photo.png"], "photo.png"),
    (["photo.png", "--probs", "photo.npy", "--out", "photo.npy"], "photo.npy"),
    (["photo.png", "--probs", "photo.npy", "--out", "link.png"], "link.png"),
    (["photo.png", "--probs", "photo.npy", "--out", "./sub/../photo.png"], "photo.png"),
    (["photo.png", "--probs", "photo.npy", "--out", "x.png", "--save-probs", "."], "--save-probs"),
    (["photo.png", "--probs", "photo.npy", "--out", "x.png", "--save-probs", "imgs/.."], "input"),
    (["imgs", "--probs", "probs", "--out", "imgs"], "--out"),
    (["imgs", "--probs", "probs", "--out", "probs"], "--out"),
    (["imgs", "--probs", "probs", "--out", "o", "--save-probs", "probs"], "--save-probs"),
    (["imgs", "--probs", "probs", "--out", "o", "--save-probs", "imgs", "--overwrite"], "input"),
    (["photo.png", "--probs", "photo.npy", "--threads", "-1"], "--threads"),
    (["photo.png", "--probs", "photo.npy", "--threads", "0"], "--threads"),
    (["photo.png", "--probs", "photo.npy", "--device", "nonsense"], "--device"),
    (["photo.png", "--probs", "photo.npy", "--tile", "0"], "--tile"),
    (["photo.png", "--labels", "photo.png", "--num-labels", "1"], "--num-labels"),
    (["photo.png", "--labels", "photo.png", "--num-labels", "3", "--gt-prob", "nan"], "gt-prob"),
    (["photo.png", "--probs", "missing.npy"], "missing.npy"),
    (["photo.png", "--probs", "imgs"], "--probs"),
    (["photo.png", "--probs", "photo.npy", "--out", "imgs"], "--out"),
    (["photo.png", "--probs", "photo.npy", "--out", "photo.png/x.png"], "photo.png"),
]


@pytest.mark.parametrize(("argv", "named"), REFUSED)
def test_refused_before_anything_is_written(inputs, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(inputs)
    (inputs / "sub").mkdir()
    before = _hashes(inputs)
    assert main(["refine", *argv, *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepcrf refine: error: ")
    assert named in err[0]
    assert _hashes(inputs) == before  # no input changed, nothing new written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_one_error_line(inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    assert main(["refine", "photo.png", "--probs", "photo.npy", "--device", "cuda"]) == 1
    assert "--device" in capsys.readouterr().err


def test_file_mode_save_probs_dir(inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    before = _hashes(inputs)
    assert (
        main(
            [
                "refine",
                "photo.png",
                "--probs",
                "photo.npy",
                "--out",
                "o/r.png",
                "--save-probs",
                "marg",
                *FAST,
            ]
        )
        == 0
    )
    q = np.load(inputs / "marg" / "r.npy")
    np.testing.assert_array_equal(q.argmax(0), read_label(inputs / "o" / "r.png"))
    assert all(_hashes(inputs)[k] == v for k, v in before.items())


def test_folder_mode_resume_checks_every_output(inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    argv = ["refine", "imgs", "--probs", "probs", "--out", "o", "--save-probs", "m", *FAST]
    before = _hashes(inputs)
    assert main(argv) == 0
    reference = {p.name: p.read_bytes() for p in (inputs / "m").iterdir()}
    (inputs / "m" / "s1.npy").unlink()  # killed between the PNG and the .npy
    (inputs / "o" / f".s2.png{TEMP_MARKER}abc.png").write_bytes(b"half")  # a stale temp
    capsys.readouterr()
    assert main(argv) == 0
    assert "refined 1 images" in capsys.readouterr().out
    assert (inputs / "m" / "s1.npy").read_bytes() == reference["s1.npy"]
    assert not [p for p in (inputs / "o").iterdir() if TEMP_MARKER in p.name]
    after = _hashes(inputs)
    assert all(after[k] == v for k, v in before.items())


def test_duplicate_stems_are_an_error(inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    Image.fromarray(_scene(0)[0]).save(inputs / "imgs" / "s0.jpg")
    assert main(["refine", "imgs", "--probs", "probs", "--out", "o", *FAST]) == 1
    err = capsys.readouterr().err
    assert "s0.jpg" in err and "s0.png" in err
    assert not (inputs / "o").exists()


def test_truncated_npy_names_the_file(inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    (inputs / "cut.npy").write_bytes((inputs / "photo.npy").read_bytes()[:150])
    assert main(["refine", "photo.png", "--probs", "cut.npy", *FAST]) == 1
    assert "cut.npy" in capsys.readouterr().err
    np.save(inputs / "nan.npy", np.full((3, 20, 24), np.nan, np.float32))
    assert main(["refine", "photo.png", "--probs", "nan.npy", *FAST]) == 1
    err = capsys.readouterr().err
    assert "nan.npy" in err and "NaN" in err
    assert not (inputs / "photo_crf.png").exists()


def test_os_errors_are_one_line(inputs, monkeypatch, capsys):
    monkeypatch.chdir(inputs)
    (inputs / "afile").write_text("x")
    argv = ["refine", "photo.png", "--probs", "photo.npy", "--out", "afile/sub/r.png", *FAST]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "afile" in err[0]
    argv = [
        "refine",
        "photo.png",
        "--probs",
        "photo.npy",
        "--out",
        "o.png",
        "--save-probs",
        "afile",
        *FAST,
    ]
    assert main(argv) == 1
    assert "--save-probs" in capsys.readouterr().err


def test_more_than_255_labels_give_a_16_bit_png(tmp_path):
    image, probs = _scene(1, labels=300)
    probs[280, :5] += 10.0
    probs /= probs.sum(0)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", probs)
    assert (
        main(
            [
                "refine",
                str(tmp_path / "a.png"),
                "--probs",
                str(tmp_path / "a.npy"),
                "--out",
                str(tmp_path / "r.png"),
                "--iterations",
                "0",
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "r.png").mode.startswith("I")
    np.testing.assert_array_equal(read_label(tmp_path / "r.png"), probs.argmax(0))


def test_label_writer_and_16_bit_photos(tmp_path):
    labels = (np.arange(12 * 10).reshape(12, 10) * 7) % 300
    write_label(tmp_path / "l.png", labels)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png"), labels)
    write_label(tmp_path / "p.png", labels % 200)
    assert Image.open(tmp_path / "p.png").mode == "P"
    with pytest.raises(ValueError, match="labels"):
        write_label(tmp_path / "n.png", labels - 1)
    ramp = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    photo = read_image(tmp_path / "g16.png")
    assert photo.shape == (8, 64, 3)
    np.testing.assert_allclose(photo[..., 0], ramp / 257.0, atol=0.51)


def test_tiled_cli_matches_library_tiles(inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    params = {
        "gaussian_sxy": 1.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 3.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
    }
    flags = [x for k, v in params.items() for x in ("--" + k.replace("_", "-"), str(v))]
    argv = ["refine", "photo.png", "--probs", "photo.npy", "--out", "t.png", "--tile", "8"]
    assert main([*argv, "--save-probs", "m", *flags, *FAST]) == 0
    from deepcrf import refine

    image, probs = read_image(inputs / "photo.png"), np.load(inputs / "photo.npy")
    expected = refine(probs, image, iterations=2, tile=8, **params)
    np.testing.assert_allclose(np.load(inputs / "m" / "t.npy"), expected, atol=1e-5)
    untiled = refine(probs, image, iterations=2, tile=False, **params)
    assert (expected.argmax(0) == untiled.argmax(0)).mean() > 0.97


def test_file_mode_removes_only_its_own_stale_temps(inputs, monkeypatch):
    monkeypatch.chdir(inputs)
    (inputs / "o").mkdir()
    mine = inputs / "o" / f".r.png{TEMP_MARKER}k1.png"
    other = inputs / "o" / f".other.png{TEMP_MARKER}k2.png"  # another process's file
    mine.write_bytes(b"half")
    other.write_bytes(b"half")
    assert main(["refine", "photo.png", "--probs", "photo.npy", "--out", "o/r.png", *FAST]) == 0
    assert not mine.exists() and other.exists()


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (PermissionError(13, "Permission denied", "/data/out.png"), "/data/out.png"),
        (IsADirectoryError(21, "Is a directory", "/data/x"), "/data/x"),
        (FileExistsError(17, "File exists", "/data/y"), "/data/y"),
        (MemoryError(), "DEEPCRF_MEMORY_BUDGET"),
    ],
)
def test_expected_failures_are_one_line_and_bugs_keep_their_traceback(
    inputs, monkeypatch, capsys, exc, text
):
    import deepcrf.cli.refine as cli_refine

    monkeypatch.chdir(inputs)

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(cli_refine, "refine_one", fail)
    assert main(["refine", "photo.png", "--probs", "photo.npy", "--out", "r.png"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepcrf refine: error: ") and text in err[0]

    def bug(*args, **kwargs):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(cli_refine, "refine_one", bug)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["refine", "photo.png", "--probs", "photo.npy", "--out", "r.png"])
