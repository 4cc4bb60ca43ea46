"""deepcrf pseudo-label: outputs equal the API's, jobs 1 and 2 agree, shards partition the
files, runs resume, bad inputs are clear errors and CAM files cannot run code."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from deepcrf.cli import main
from deepcrf.data.io import read_label
from deepcrf.weak import PRESETS, pseudo_labels

H, W = 30, 40
NAMES = [f"2007_{i:06d}" for i in range(7)]


def _make(folder, names=NAMES):
    """IRN-style CAM dicts (torch keys, as IRN writes them) and JPEG images."""
    (folder / "cams").mkdir()
    (folder / "img").mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        image = (rng.random((H, W, 3)) * 60 + 80).astype(np.uint8)
        image[5 + i % 4 : 20, 6:24] = (210, 50, 40)
        Image.fromarray(image).save(folder / "img" / f"{name}.png")
        yy, xx = np.mgrid[0:H, 0:W]
        cam = np.exp(-((yy - 12) ** 2 + (xx - 15) ** 2) / (2 * 6.0**2))
        cams = np.clip(cam + rng.normal(0, 0.03, (H, W)), 0, 1)[None].astype(np.float32)
        keys = torch.tensor([i % 20])
        np.save(folder / "cams" / f"{name}.npy", {"keys": keys, "high_res": cams})
    return folder / "cams", folder / "img"


def _run(cams, img, out, *extra):
    args = ["pseudo-label", "--cams", str(cams), "--images", str(img), "--out", str(out)]
    return main([*args, "--quiet", *extra])


def _outputs(folder):
    return {p.stem: read_label(p) for p in sorted(folder.glob("*.png"))}


def test_outputs_equal_the_api_and_jobs_do_not_change_them(tmp_path, capsys):
    cams, img = _make(tmp_path)
    assert _run(cams, img, tmp_path / "one") == 0
    assert "pseudo-labelled 7 images" in capsys.readouterr().out
    one = _outputs(tmp_path / "one")
    assert sorted(one) == NAMES
    for name in NAMES[:2]:
        content = np.load(cams / f"{name}.npy", allow_pickle=True).item()
        image = np.array(Image.open(img / f"{name}.png"))
        expected = pseudo_labels(
            content["high_res"], image, content["keys"].numpy(), **PRESETS["irn"]
        )
        np.testing.assert_array_equal(one[name], expected)
        assert Image.open(tmp_path / "one" / f"{name}.png").mode == "P"
    assert _run(cams, img, tmp_path / "two", "--jobs", "2") == 0
    two = _outputs(tmp_path / "two")
    assert sorted(two) == NAMES
    for name in NAMES:
        np.testing.assert_array_equal(one[name], two[name])


def test_two_shards_partition_the_files(tmp_path, capsys):
    cams, img = _make(tmp_path)
    out = tmp_path / "out"
    assert _run(cams, img, out, "--shard", "0/2") == 0
    first = set(_outputs(out))
    assert "shard 0/2" in capsys.readouterr().out
    assert _run(cams, img, out, "--shard", "1/2") == 0
    both = _outputs(out)
    second = set(both) - first
    assert first and second and sorted(first | second) == NAMES
    assert _run(cams, img, tmp_path / "all") == 0
    full = _outputs(tmp_path / "all")
    for name in NAMES:
        np.testing.assert_array_equal(both[name], full[name])


def test_resume_skips_finished_files_and_clears_stale_temps(tmp_path, capsys):
    cams, img = _make(tmp_path)
    out = tmp_path / "out"
    assert _run(cams, img, out) == 0
    kept = out / f"{NAMES[0]}.png"
    os.utime(kept, (1, 1))
    (out / f"{NAMES[3]}.png").unlink()  # as if the run was killed while writing it
    stale = out / f".{NAMES[3]}.png.deepcrf-tmp-abc.png"
    stale.write_bytes(b"partial")
    capsys.readouterr()
    assert _run(cams, img, out) == 0
    assert "pseudo-labelled 1 images" in capsys.readouterr().out
    assert (out / f"{NAMES[3]}.png").exists() and not stale.exists()
    assert kept.stat().st_mtime == 1  # untouched
    assert _run(cams, img, out, "--overwrite") == 0
    assert kept.stat().st_mtime > 1


def test_plain_arrays_and_presets(tmp_path):
    cams, img = _make(tmp_path, NAMES[:2])
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in NAMES[:2]:
        content = np.load(cams / f"{name}.npy", allow_pickle=True).item()
        full = np.zeros((20, H, W), np.float32)
        full[content["keys"].numpy()] = content["high_res"]
        np.save(plain / f"{name}.npy", full)
    assert _run(cams, img, tmp_path / "a") == 0
    assert _run(plain, img, tmp_path / "b") == 0
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    for name in NAMES[:2]:
        np.testing.assert_array_equal(a[name], b[name])
    assert _run(cams, img, tmp_path / "psa", "--preset", "psa", "--iterations", "2") == 0
    assert _run(cams, img, tmp_path / "c", "--preset", "clip_es", "--confidence", "0.5") == 0
    assert len(_outputs(tmp_path / "c")) == 2


@pytest.mark.parametrize("spec", ["3/2", "0/0", "x"])
def test_bad_shard_specs(tmp_path, capsys, spec):
    cams, img = _make(tmp_path, NAMES[:1])
    assert _run(cams, img, tmp_path / "out", "--shard", spec) == 1
    assert "--shard" in capsys.readouterr().err


def test_bad_inputs_name_the_file(tmp_path, capsys):
    cams, img = _make(tmp_path, NAMES[:2])
    np.save(cams / f"{NAMES[1]}.npy", {"keys": np.array([1]), "high_res": np.zeros((1, 8, 8))})
    assert _run(cams, img, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert NAMES[1] in err and "8x8" in err and "30x40" in err
    np.save(cams / "orphan.npy", np.zeros((1, H, W), np.float32))
    assert _run(cams, img, tmp_path / "out") == 1
    assert "orphan" in capsys.readouterr().err
    (cams / "orphan.npy").unlink()
    np.save(cams / f"{NAMES[1]}.npy", {"keys": np.array([300]), "high_res": np.zeros((1, H, W))})
    assert _run(cams, img, tmp_path / "out") == 1
    assert "keys" in capsys.readouterr().err
    assert _run(cams, img, tmp_path / "out", "--jobs", "0") == 1
    assert "--jobs" in capsys.readouterr().err


def test_a_malicious_cam_file_is_refused(tmp_path, capsys):
    cams, img = _make(tmp_path, NAMES[:1])
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = np.empty((), dtype=object)
    evil[()] = {"keys": Payload(), "high_res": np.zeros((1, H, W))}
    np.save(cams / f"{NAMES[0]}.npy", evil, allow_pickle=True)
    assert _run(cams, img, tmp_path / "out") == 1
    assert "not allowed" in capsys.readouterr().err
    assert not marker.exists()


def test_flags_override_the_preset():
    from deepcrf.cli import build_parser
    from deepcrf.cli.pseudo_label import options_from_args

    def options(*flags):
        args = build_parser().parse_args(
            ["pseudo-label", "--cams", "c", "--images", "i", "--out", "o", *flags]
        )
        return options_from_args(args)

    irn = options()
    assert irn["fg_threshold"] == 0.30 and irn["bilateral_srgb"] == 5.0 and irn["gt_prob"] == 0.7
    single = options("--threshold", "0.2", "--bilateral-srgb", "7")
    assert single["threshold"] == 0.2 and "fg_threshold" not in single
    assert single["bilateral_srgb"] == 7.0 and single["bilateral_sxy"] == 50.0
    psa = options("--preset", "psa", "--alpha", "2,16")
    assert psa["alpha"] == (2.0, 16.0) and psa["bilateral_sxy"] == 80.0
    power = options("--background", "power", "--alpha", "3")
    assert power["alpha"] == 3.0 and "fg_threshold" not in power


def test_two_shards_with_two_jobs_each_equal_one_process(tmp_path, capsys):
    """The whole-dataset check: shards run with --jobs 2 (forked workers where each gets one
    thread) give exactly the files and bytes of one --jobs 1 run, none missing or doubled."""
    cams, img = _make(tmp_path)
    out = tmp_path / "out"
    for spec in ("0/2", "1/2"):
        assert _run(cams, img, out, "--shard", spec, "--jobs", "2") == 0
    assert _run(cams, img, tmp_path / "all", "--jobs", "1") == 0
    sharded = sorted(p.name for p in out.iterdir())
    assert sharded == sorted(f"{name}.png" for name in NAMES)
    for name in NAMES:
        assert (out / f"{name}.png").read_bytes() == (tmp_path / "all" / f"{name}.png").read_bytes()


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_outputs(tmp_path):
    """SIGKILL a --jobs 2 run once it has written some files; the rerun completes the folder
    with the bytes of an uninterrupted run and leaves no temporary file."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import deepcrf

    names = [f"img_{i:03d}" for i in range(16)]
    cams, img = _make(tmp_path, names)
    source = str(Path(deepcrf.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "deepcrf", "pseudo-label", "--cams", str(cams)]
    command += ["--images", str(img), "--out", str(out), "--quiet", "--jobs", "2"]
    command += ["--iterations", "200"]  # slow enough to be caught part-way
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if out.is_dir() and len(list(out.glob("*.png"))) >= 2:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    written = len(list(out.glob("*.png")))
    assert 0 < written < len(names), "the run was not caught part-way"
    assert _run(cams, img, out, "--iterations", "200", "--jobs", "2") == 0
    assert _run(cams, img, tmp_path / "fresh", "--iterations", "200") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        assert (out / f"{name}.png").read_bytes() == (
            tmp_path / "fresh" / f"{name}.png"
        ).read_bytes()


def test_images_of_several_sizes_jobs_two_equal_jobs_one_and_the_api(tmp_path):
    """Items are handed out grouped by image size; outputs do not depend on it."""
    (tmp_path / "cams").mkdir()
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(3)
    sizes = [(30, 40), (26, 44), (30, 40), (40, 30), (26, 44), (33, 35)]
    expected = {}
    for i, (h, w) in enumerate(sizes):
        name = f"img_{i}"
        image = (rng.random((h, w, 3)) * 60 + 80).astype(np.uint8)
        image[4:18, 5:20] = (200, 40, 50)
        cams = np.zeros((1, h, w), np.float32)
        cams[0, 4:18, 5:20] = 0.8
        cams = np.clip(cams + rng.random((1, h, w)).astype(np.float32) * 0.2, 0, 1)
        Image.fromarray(image).save(tmp_path / "img" / f"{name}.png")
        np.save(tmp_path / "cams" / f"{name}.npy", {"keys": np.array([i]), "high_res": cams})
        expected[name] = pseudo_labels(cams, image, [i], **PRESETS["irn"])
    cams_dir, img_dir = tmp_path / "cams", tmp_path / "img"
    assert _run(cams_dir, img_dir, tmp_path / "one") == 0
    assert _run(cams_dir, img_dir, tmp_path / "two", "--jobs", "2") == 0
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert set(one) == set(two) == set(expected)
    for name, labels in expected.items():
        np.testing.assert_array_equal(one[name], labels)
        np.testing.assert_array_equal(two[name], labels)
