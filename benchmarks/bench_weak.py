"""Weak supervision: ``deepcrf pseudo-label`` against pydensecrf in a process pool, and the
DenseCRF loss against brute force and rloss's numpy formula.

Prints markdown tables with ratios measured in the same run:
  1. images/s of ``deepcrf pseudo-label --preset irn --jobs J`` (the whole command: start-up,
     reading, CRF, writing) against the common public pattern, IRN's cam_to_ir_label step on
     pydensecrf mapped over the files by ``multiprocessing.Pool(J)``, on VOC-size photos
     (rounds interleaved, medians); pixel agreement of the two outputs; and the steady-state
     seconds per image of both in one process (no start-up);
  2. DenseCRF loss forward+backward: deepcrf (lattice, exact) against a dense brute-force
     torch computation and rloss's CPU pattern (``.cpu().numpy()``, the filter, ``np.dot``,
     gradient -2 AS / N back to torch), with the lattice standing in for rloss's C++ filter.

Usage: python benchmarks/bench_weak.py [--images 16,30] [--jobs 2] [--rounds 2]
                                       [--voc ../shared/data/voc-samples] [--against main]
``--against REV`` adds a row for the same command run from git revision REV's ``src``
(exported to a temporary folder), in the same interleaved rounds: a before/after of a
change measured under the same load. Needs pydensecrf (``pip install pydensecrf2``) for
table 1.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ../shared of the checkout (or of a folder above it: worktrees live one level deeper)
VOC = next(
    (
        folder / "shared" / "data" / "voc-samples"
        for folder in ROOT.parents
        if (folder / "shared" / "data" / "voc-samples").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "voc-samples",
)


# ----------------------------------------------------------------------------- data
def make_dataset(folder: Path, count: int, voc: Path) -> list[str]:
    """VOC photos (repeated, mirrored every other round) with IRN-style CAM dicts whose
    CAMs are the ground-truth masks blurred at stride 16 with noise (numpy keys, so the
    reference needs no torch to read them)."""
    from PIL import Image

    photos = sorted(p for p in voc.glob("*.png") if not p.stem.endswith("_labels"))
    if not photos:
        sys.exit(f"no photos in {voc} (pass --voc)")
    (folder / "cams").mkdir(parents=True)
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        path = photos[i % len(photos)]
        image = np.array(Image.open(path).convert("RGB"))
        label = np.array(Image.open(path.with_name(path.stem + "_labels.png")))
        if (i // len(photos)) % 2:
            image, label = image[:, ::-1].copy(), label[:, ::-1].copy()
        classes = [int(c) for c in np.unique(label) if 0 < c < 21] or [1]
        cams = np.stack([_blurred((label == c).astype(np.float32), rng) for c in classes])
        name = f"{i:04d}_{path.stem}"
        Image.fromarray(image).save(folder / "images" / f"{name}.jpg", quality=95)
        np.save(
            folder / "cams" / f"{name}.npy",
            {"keys": np.array(classes) - 1, "high_res": cams.astype(np.float32)},
        )
        names.append(name)
    return names


def _blurred(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = mask.shape
    coarse = np.pad(mask, ((0, -h % 16), (0, -w % 16)))
    coarse = coarse.reshape(-(-h // 16), 16, -(-w // 16), 16).mean((1, 3))
    rows = np.clip((np.arange(h) + 0.5) / 16 - 0.5, 0, coarse.shape[0] - 1)
    cols = np.clip((np.arange(w) + 0.5) / 16 - 0.5, 0, coarse.shape[1] - 1)
    r0, c0 = rows.astype(int), cols.astype(int)
    r1 = np.minimum(r0 + 1, coarse.shape[0] - 1)
    c1 = np.minimum(c0 + 1, coarse.shape[1] - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None]
    up = (coarse[r0][:, c0] * (1 - fr) + coarse[r1][:, c0] * fr) * (1 - fc)
    up += (coarse[r0][:, c1] * (1 - fr) + coarse[r1][:, c1] * fr) * fc
    up = np.clip(up + rng.normal(0, 0.05, up.shape), 0, None)
    return up / max(float(up.max()), 1e-5)


# ----------------------------------------------------------------------------- reference
def _crf_inference_label(img, labels, n_labels, t=10, gt_prob=0.7):
    """IRN's imutils.crf_inference_label, verbatim."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    unary = unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False)
    d.setUnaryEnergy(unary)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, h, w)), axis=0)


def irn_reference(job: tuple[str, str, str]) -> None:
    """IRN's cam_to_ir_label._work for one file (conf_fg_thres 0.30, conf_bg_thres 0.05)."""
    from PIL import Image

    cam_path, image_path, out_path = job
    img = np.asarray(Image.open(image_path).convert("RGB"))
    cam_dict = np.load(cam_path, allow_pickle=True).item()
    cams = cam_dict["high_res"]
    keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
    fg_conf_cam = np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=0.30)
    pred = _crf_inference_label(img, np.argmax(fg_conf_cam, axis=0), n_labels=keys.shape[0])
    fg_conf = keys[pred]
    bg_conf_cam = np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=0.05)
    pred = _crf_inference_label(img, np.argmax(bg_conf_cam, axis=0), n_labels=keys.shape[0])
    bg_conf = keys[pred]
    conf = fg_conf.copy()
    conf[fg_conf == 0] = 255
    conf[bg_conf + fg_conf == 0] = 0
    Image.fromarray(conf.astype(np.uint8)).save(out_path)


def run_reference(data: Path, out: Path, jobs: int) -> None:
    """The public pattern: a multiprocessing pool of pydensecrf workers over the files."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in (data / "cams").glob("*.npy"))
    work = [
        (str(data / "cams" / f"{n}.npy"), str(data / "images" / f"{n}.jpg"), str(out / f"{n}.png"))
        for n in names
    ]
    with multiprocessing.Pool(jobs) as pool:
        pool.map(irn_reference, work, chunksize=1)


# ----------------------------------------------------------------------------- table 1
def _timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys of the command and its worker processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def source_at(revision: str, folder: Path) -> Path:
    """This repository's ``src`` as it is at git ``revision``, exported under ``folder``."""
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def _pseudo_label_command(data: Path, out: Path, jobs: int) -> list[str]:
    command = [sys.executable, "-m", "deepcrf", "pseudo-label", "--preset", "irn"]
    command += ["--cams", str(data / "cams"), "--images", str(data / "images")]
    return [*command, "--out", str(out), "--quiet", "--jobs", str(jobs)]


def bench_pseudo_label(args: argparse.Namespace, details: bool = True) -> None:
    """Table 1 for ``args.images`` photos; ``details``: also the steady state per image and
    the stage breakdown (measured once for several folder sizes)."""
    from PIL import Image

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        names = make_dataset(data, args.images, Path(args.voc))
        size = Image.open(next((data / "images").iterdir())).size
        other_env = None
        if args.against:
            other = source_at(args.against, data / "against")
            other_env = {**os.environ, "PYTHONPATH": str(other)}
        ours_t, ref_t, start_t, other_t = [], [], [], []
        for r in range(args.rounds):
            out_ours, out_ref = data / f"ours{r}", data / f"ref{r}"
            ours_cmd = _pseudo_label_command(data, out_ours, args.jobs)
            ours_t.append(_timed(ours_cmd, env))
            ref_cmd = [sys.executable, __file__, "--reference", str(data), str(out_ref)]
            ref_t.append(_timed([*ref_cmd, str(args.jobs)], env))
            start_t.append(_timed(ours_cmd, env))  # again: every output exists, nothing to do
            if other_env is not None:
                other_cmd = _pseudo_label_command(data, data / f"other{r}", args.jobs)
                other_t.append(_timed(other_cmd, other_env))
        agree = _agreement(data / "ours0", data / "ref0", names)
        agree_other = _agreement(data / "ours0", data / "other0", names) if other_t else None
        sample = names[: min(4, len(names))]
        steady = _steady_state(data, sample) if details else None
        stages = _stage_breakdown(data, sample) if details else None
    n = args.images
    ours, ref, start = (statistics.median(t[0] for t in ts) for ts in (ours_t, ref_t, start_t))
    ours_cpu, ref_cpu, start_cpu = (
        statistics.median(t[1] for t in ts) for ts in (ours_t, ref_t, start_t)
    )
    print(f"\n### pseudo-label, IRN preset, {n} VOC photos ({size[0]}x{size[1]}), jobs {args.jobs}")
    print(f"(whole commands incl. start-up; medians of {args.rounds} interleaved rounds;")
    print(f" load average before {load_before}, after {_load()})\n")
    print("| | wall s | images/s | ratio | CPU s | images per CPU s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| pydensecrf, multiprocessing.Pool({args.jobs}) | {ref:.2f} | {n / ref:.2f} | 1.00x "
        f"| {ref_cpu:.2f} | {n / ref_cpu:.2f} | 1.00x |"
    )
    print(
        f"| deepcrf pseudo-label --jobs {args.jobs} | {ours:.2f} | {n / ours:.2f} | "
        f"{ref / ours:.2f}x | {ours_cpu:.2f} | {n / ours_cpu:.2f} | {ref_cpu / ours_cpu:.2f}x |"
    )
    if other_t:
        other = statistics.median(t[0] for t in other_t)
        other_cpu = statistics.median(t[1] for t in other_t)
        print(
            f"| deepcrf pseudo-label --jobs {args.jobs} at {args.against} | {other:.2f} | "
            f"{n / other:.2f} | {ref / other:.2f}x | {other_cpu:.2f} | {n / other_cpu:.2f} | "
            f"{ref_cpu / other_cpu:.2f}x |"
        )
    print(
        f"| (of which start-up: the same command with nothing to do) | {start:.2f} | | | "
        f"{start_cpu:.2f} | | |"
    )
    print(f"\npixel agreement of the two outputs: {100 * agree:.3f} %")
    if other_t:
        print(
            f"this checkout against {args.against}: wall {ours / other:.3f}x, CPU "
            f"{ours_cpu / other_cpu:.3f}x; outputs agree on {100 * agree_other:.4f} % of pixels"
        )
    if not details:
        return
    s_ours, s_ref = steady
    print("\nsteady state, one process, one thread, CPU seconds per image (no start-up):\n")
    print("| pydensecrf (IRN) | deepcrf | ratio |")
    print("| ---: | ---: | ---: |")
    print(f"| {s_ref:.3f} | {s_ours:.3f} | {s_ref / s_ours:.2f}x |")
    total = sum(ms for _, ms in stages)
    print("\ndeepcrf per stage, CPU ms per image (one process, one thread, the worker's code):\n")
    print("| stage | ms | share |")
    print("| --- | ---: | ---: |")
    for stage, ms in stages:
        print(f"| {stage} | {ms:.1f} | {100 * ms / total:.0f} % |")
    print(f"| total | {total:.1f} | 100 % |")


def _agreement(first: Path, second: Path, names: list[str]) -> float:
    """Mean share of equal pixels of the label PNGs of ``names`` in two folders."""
    from PIL import Image

    return float(
        np.mean(
            [
                (
                    np.array(Image.open(first / f"{n}.png"))
                    == np.array(Image.open(second / f"{n}.png"))
                ).mean()
                for n in names
            ]
        )
    )


_STAGES = (  # (module, attribute, stage); nested calls are charged to the innermost stage
    ("deepcrf.data.cams", "read_cams", "read CAMs (restricted unpickler)"),
    ("deepcrf.data.io", "read_image", "decode image"),
    ("deepcrf.weak", "unary_from_labels", "label unaries (dense.unary_from_labels)"),
    ("deepcrf.weak", "bilateral_features", "bilateral features"),
    ("deepcrf.kernel", "build_lattice", "bilateral lattice build (lattice.py)"),
    ("deepcrf.weak", "Pairwise", "kernels: normalisation scales"),
    ("deepcrf.crf", "stack_lattices", "stacking the kernels' lattices (lattice.py)"),
    ("deepcrf.weak", "mean_field", "mean field, 2 runs side by side x 10 iterations"),
    ("deepcrf.viz", "save_label_png", "PNG encoding"),
    ("deepcrf.fileio", "atomic_write", "atomic write (temp, fsync, rename)"),
)


def _stage_breakdown(data: Path, names: list[str]) -> list[tuple[str, float]]:
    """CPU ms per image of each stage of ``label_one`` (what a worker runs per image),
    timed by wrapping the functions it calls; "other" is the rest of ``pseudo_labels``
    (input checks, layout, arg-max, label mapping). The grid kernel's lattice, its
    normalisation and scaled copy are cached per image size (built in the warm-up)."""
    import importlib

    import torch

    from deepcrf.cli.batch import BatchItem
    from deepcrf.cli.pseudo_label import label_one
    from deepcrf.weak import PRESETS

    torch.set_num_threads(1)
    spent: dict[str, float] = {stage: 0.0 for *_, stage in _STAGES}
    stack: list[list[float]] = []

    def timed(func, stage):
        def wrapper(*args, **kwargs):
            stack.append([time.process_time(), 0.0])  # start, time of nested stages
            try:
                return func(*args, **kwargs)
            finally:
                begin, nested = stack.pop()
                took = time.process_time() - begin
                spent[stage] += took - nested
                if stack:
                    stack[-1][1] += took

        return wrapper

    saved = []
    for module_name, attribute, stage in _STAGES:
        module = importlib.import_module(module_name)
        saved.append((module, attribute, getattr(module, attribute)))
        setattr(module, attribute, timed(getattr(module, attribute), stage))
    options = {k: v for k, v in PRESETS["irn"].items()}
    total, count = 0.0, 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            items = [
                BatchItem(
                    n,
                    (data / "cams" / f"{n}.npy", data / "images" / f"{n}.jpg"),
                    Path(tmp) / f"{n}.png",
                )
                for n in names
            ]
            for item in items:  # warm-up: first-call costs, cached grid lattices
                label_one(options, "voc", item)
            for key in spent:
                spent[key] = 0.0
            for _ in range(2):
                for item in items:
                    begin = time.process_time()
                    label_one(options, "voc", item)
                    total += time.process_time() - begin
                    count += 1
    finally:
        for module, attribute, original in saved:
            setattr(module, attribute, original)
    rows = [(stage, 1e3 * spent[stage] / count) for *_, stage in _STAGES]
    rows.append(
        (
            "other (checks, layout, arg-max, label mapping)",
            1e3 * total / count - sum(ms for _, ms in rows),
        )
    )
    return rows


def _steady_state(data: Path, names: list[str]) -> tuple[float, float]:
    import torch
    from PIL import Image

    from deepcrf.data.cams import read_cams
    from deepcrf.weak import PRESETS, pseudo_labels

    torch.set_num_threads(1)
    jobs = [(data / "cams" / f"{n}.npy", data / "images" / f"{n}.jpg") for n in names]
    ours, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            for cam_path, image_path in jobs:
                start = time.process_time()
                cams, keys = read_cams(cam_path)
                image = np.asarray(Image.open(image_path).convert("RGB"))
                pseudo_labels(cams, image, keys, **PRESETS["irn"])
                if rep:
                    ours.append(time.process_time() - start)
                start = time.process_time()
                irn_reference((str(cam_path), str(image_path), str(Path(tmp) / "x.png")))
                if rep:
                    ref.append(time.process_time() - start)
    return statistics.median(ours), statistics.median(ref)


# ----------------------------------------------------------------------------- table 2
def bench_loss() -> None:
    import torch

    torch.set_num_threads(1)
    print("\n### DenseCRF loss, forward + backward, B=2, K=21, sigma_rgb 15, sigma_xy 100\n")
    print(
        "| size | loss runs at | brute force | rloss numpy | deepcrf exact | deepcrf lattice "
        "| deepcrf default (auto) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (h, w), scale in (((48, 64), 1.0), ((96, 128), 0.5), ((321, 321), 0.5)):
        print(_loss_row(h, w, scale))
    print("\n(x = speed-up over brute force; rloss numpy uses the lattice as its filter)")


def _loss_row(h: int, w: int, scale: float) -> str:
    import torch

    from deepcrf.nn import DenseCRFLoss

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, h, w, generator=g) * 255
    logits = torch.randn(2, 21, h, w, generator=g, requires_grad=True)
    roi = torch.ones(2, h, w)
    small = (int(h * scale), int(w * scale))
    lattice = DenseCRFLoss(1e-7, 15.0, 100.0, scale, "lattice")
    exact = DenseCRFLoss(1e-7, 15.0, 100.0, scale, "exact")
    auto = DenseCRFLoss(1e-7, 15.0, 100.0, scale)
    cases = {
        "lattice": lambda p: lattice(images, p, roi),
        "auto": lambda p: auto(images, p, roi),
        "rloss": lambda p: _rloss_numpy(images, p, roi, scale),
    }
    if small[0] * small[1] <= 6000:
        cases["exact"] = lambda p: exact(images, p, roi)
        cases["brute"] = lambda p: _brute_force(images, p, roi, scale)
    timings = {}
    for name, fn in cases.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn(torch.softmax(logits, 1)).backward()
            times.append(time.perf_counter() - start)
        timings[name] = min(times)
    base = timings.get("brute")
    cells = []
    for key in ("brute", "rloss", "exact", "lattice", "auto"):
        if key not in timings:
            cells.append("-")
            continue
        t = timings[key]
        cells.append(f"{t * 1e3:.1f} ms" + (f" ({base / t:.1f}x)" if base else ""))
    return f"| {h}x{w} | {small[0]}x{small[1]} | " + " | ".join(cells) + " |"


def bench_loss_accuracy(voc: Path) -> None:
    """The lattice's estimate of the loss against float64 brute force, raw and over
    LATTICE_GAIN, on photos and generated scenes (value ratio and gradient error)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from deepcrf.nn import DenseCRFLoss
    from deepcrf.nn.loss import LATTICE_GAIN

    torch.set_num_threads(1)
    photos = sorted(p for p in voc.glob("*.png") if not p.stem.endswith("_labels"))
    scenes = []
    for path in photos:
        pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB")))
        pixels = pixels.permute(2, 0, 1)[None].double()
        for size in ((48, 64), (96, 128)):
            scenes.append(("photo", F.interpolate(pixels, size=size, mode="area")))
        half = F.interpolate(pixels, scale_factor=0.5)  # rloss's 0.5 scale, a 120x160 crop
        scenes.append(("photo", half[:, :, :120, :160].contiguous()))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        coarse = torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64) * 255
        smooth = F.interpolate(coarse, size=(48, 64), mode="bilinear", align_corners=False)
        smooth[:, :, 16:, 32:] = torch.tensor([30.0, 160.0, 60.0]).double()[:, None, None]
        noisy = smooth + torch.randn(smooth.shape, generator=g, dtype=torch.float64) * 4
        scenes.append(("generated", noisy.clamp(0, 255)))
        scenes.append(("generated", torch.rand(1, 3, 48, 64, generator=g).double() * 255))
    rows: dict[str, list[tuple[float, float]]] = {"photo": [], "generated": []}
    for kind, image in scenes:
        h, w = image.shape[2:]
        logits = torch.randn(1, 4, h // 8 + 1, w // 8 + 1, generator=g, dtype=torch.float64)
        logits = F.interpolate(logits * 3, size=(h, w), mode="bilinear", align_corners=False)
        for sigma_xy, sigma_rgb in ((w / 3, 15.0), (w / 10, 15.0), (w / 3, 5.0)):
            results = []
            for filter in ("lattice", "exact"):
                probs = torch.softmax(logits, 1).requires_grad_()
                loss = DenseCRFLoss(1.0, sigma_rgb, sigma_xy, filter=filter)
                value = loss(image, probs)
                (grad,) = torch.autograd.grad(value, probs)
                results.append((value.item(), grad))
            (lat, lat_grad), (ref, ref_grad) = results
            error = ((lat_grad - ref_grad).norm() / ref_grad.norm()).item()
            rows[kind].append((lat / ref, error))
    print(
        f"\n### DenseCRF loss: lattice against float64 brute force ({len(scenes)} images x 3 "
        f"bandwidth pairs; LATTICE_GAIN = {LATTICE_GAIN})\n"
    )
    print(
        "| images | cases | raw lattice value ratio min / median / max | over the gain "
        "min / p10 / median / p90 / max | gradient error median / p90 |"
    )
    print("| --- | ---: | --- | --- | --- |")
    for kind, values in rows.items():
        ratio = np.array([r for r, _ in values])
        error = np.array([e for _, e in values])
        raw = ratio * LATTICE_GAIN
        q = np.percentile(ratio, [0, 10, 50, 90, 100])
        print(
            f"| {kind} | {len(values)} | {raw.min():.2f} / {np.median(raw):.2f} / {raw.max():.2f} "
            f"| {' / '.join(f'{v:.2f}' for v in q)} "
            f"| {100 * np.median(error):.1f} % / {100 * np.percentile(error, 90):.1f} % |"
        )
    print("(generated: smooth colour fields with an edge and noise, and uniform noise images)")


def _resized(images, probs, roi, scale):
    import torch.nn.functional as F

    if scale == 1.0:
        return images, probs, roi
    return (
        F.interpolate(images, scale_factor=scale),
        F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False),
        F.interpolate(roi[:, None], scale_factor=scale)[:, 0],
    )


def _brute_force(images, probs, roi, scale):
    """Dense W (N x N) per image, autograd through -sum S^T W S."""
    import torch

    images, probs, roi = _resized(images, probs, roi, scale)
    b, k, h, w = probs.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).float() / (100.0 * scale)
    total = 0.0
    for i in range(b):
        feats = torch.cat([pos, images[i].reshape(3, -1).t() / 15.0], 1)
        kernel = torch.exp(-0.5 * torch.cdist(feats, feats) ** 2)
        s = (probs[i] * roi[i]).reshape(k, -1)
        total = total - ((s @ kernel) * s).sum()
    return 1e-7 * total / b


class _RlossFunction:
    """rloss's DenseEnergyLossFunction: numpy round trip, np.dot, gradient -2 AS / N."""

    @staticmethod
    def build():
        import torch

        from deepcrf.features import bilateral_features
        from deepcrf.lattice import build_lattice

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, images, segmentations, roi, sigma_xy):
                n, k, h, w = segmentations.shape
                rois = roi.unsqueeze(1).repeat(1, k, 1, 1)
                seg = (segmentations * rois).cpu().numpy()
                filtered = np.zeros_like(seg)
                for i in range(n):  # rloss's bilateralfilter_batch, one image at a time
                    feats = bilateral_features(images[i].permute(1, 2, 0), sigma_xy, 15.0)
                    vals = torch.from_numpy(seg[i].reshape(k, -1).T.copy())
                    out = build_lattice(feats).filter(vals).numpy()
                    filtered[i] = out.T.reshape(k, h, w)
                loss = -np.dot(seg.flatten(), filtered.flatten()) / n
                ctx.save_for_backward(rois)
                ctx.filtered, ctx.n = filtered, n
                return torch.tensor([loss])

            @staticmethod
            def backward(ctx, grad_output):
                (rois,) = ctx.saved_tensors
                grad = -2 * grad_output * torch.from_numpy(ctx.filtered) / ctx.n
                return None, grad * rois, None, None

        return Fn


_RLOSS = None


def _rloss_numpy(images, probs, roi, scale):
    global _RLOSS
    if _RLOSS is None:
        _RLOSS = _RlossFunction.build()
    images, probs, roi = _resized(images, probs, roi, scale)
    return 1e-7 * _RLOSS.apply(images, probs, roi, 100.0 * scale)[0]


# ----------------------------------------------------------------------------- main
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reference":
        run_reference(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        default="16",
        help="VOC-size photos to label; several folder sizes as 16,30 (one table each)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes, both sides")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--voc", default=str(VOC), help="folder of the VOC sample photos")
    parser.add_argument(
        "--against", default=None, help="also time this git revision's command (same rounds)"
    )
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--skip-pseudo-label", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; timings on a shared machine are noisy, ratios not")
    if not args.skip_pseudo_label:
        counts = [int(text) for text in str(args.images).split(",")]
        for i, count in enumerate(counts):
            args.images = count
            bench_pseudo_label(args, details=i == 0)
    if not args.skip_loss:
        bench_loss()
        bench_loss_accuracy(Path(args.voc))


if __name__ == "__main__":
    main()
