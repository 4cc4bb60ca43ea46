"""Dense CRF post-processing: deepcrf vs pydensecrf on natural photos.

Prints markdown tables (paste them into README):
  1. per photo at VOC size, 21 labels, sxy=3/compat=3 + sxy=80/srgb=13/compat=10, T=10:
     total time (lattice build + inference) and per-iteration time as ratios to
     pydensecrf measured in the same run (medians of repeats interleaved round-robin over
     photos and libraries), label agreement and max |dQ|; with 2 threads and 1 thread;
  2. peak memory of one refinement (child processes, ru_maxrss growth);
  3. time against image size from 0.1 to 4 megapixels (per-pixel cost = linearity);
  4. with --device cuda: latency per image and batched throughput;
  5. with --load: ``deepcrf.refine`` quiet and with competing busy processes started by the
     benchmark itself (``--busy`` of them): deepcrf with default settings (the thread
     policy of ``deepcrf.threads``), forced to torch's 2 threads, on 1 thread, and
     pydensecrf, round-robin in the same run;
  6. with --breakdown: one mean-field iteration split into splat, blur, slice, unary add and
     normalisation, next to a copy of an (N, L) buffer timed in the same run, so the
     distance to the memory-bandwidth floor is printed (an iteration must at least read the
     marginals, read the unaries and write the new marginals: 1.5 copies).
  7. ``--memory 0.5,2,4``: only peak memory per megapixel, untiled vs tiled within a
     budget (``--budget 1G``; see ``deepcrf.tiling``).
  8. with --build: the bilateral lattice of each photo (DeepLab's sxy=80/srgb=13 and IRN's
     50/5) built and normalised, against pydensecrf's ``addPairwiseBilateral`` (its lattice
     build and normalisation) in the same run, per thread count of --threads.

Usage: python benchmarks/bench_dense.py [--repeats 5] [--sizes 0.1,0.25,0.5,1,2,4]
       python benchmarks/bench_dense.py --load --breakdown --sizes '' --threads ''
Needs pydensecrf (``pip install pydensecrf2``) for the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepcrf import refine
from deepcrf.compat.pydensecrf import densecrf as ours
from deepcrf.compat.pydensecrf.utils import unary_from_softmax
from deepcrf.crf import normalization_scales
from deepcrf.data import coarse_probabilities
from deepcrf.features import bilateral_features, grid_features
from deepcrf.lattice import build_lattice, stack_lattices
from deepcrf.params import PRESETS
from deepcrf.threads import choose_threads, last_call, use_threads

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLES = ROOT.parent / "shared" / "data" / "voc-samples"
NUM_LABELS = 21

#: The CRF of every table, the same in both libraries: a ``deepcrf.params.PRESETS`` entry
#: (``--params``), by default pydensecrf's README example (3/3 + 80/13/10, what pydensecrf
#: users run); ``deeplab_largefov`` is ``deepcrf.refine``'s defaults (3/3 + 121/5/4).
#: ``SETTINGS`` is the one in use (``refine`` keyword arguments).
SETTINGS: dict = PRESETS["pydensecrf"].to_dict()


def photos(folder: Path = VOC_SAMPLES) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, RGB uint8 image, label map or None) for every natural photo available."""
    found = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.png")):
            if path.stem.endswith("_labels"):
                continue
            image = np.array(Image.open(path).convert("RGB"))
            labels = np.array(Image.open(path.with_name(path.stem + "_labels.png"))).astype(
                np.int64
            )
            found.append((path.stem, image, np.where(labels < NUM_LABELS, labels, 0)))
    try:  # a photo shipped inside a pip package
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.exists():
            image = Image.open(hopper).convert("RGB")
            image = image.resize((375, 500))  # VOC size, portrait
            found.append(("grace_hopper", np.array(image), None))
    except ImportError:
        pass
    if not found:
        sys.exit("no photos found (../shared/data/voc-samples or matplotlib's sample data)")
    return found


def probabilities(image: np.ndarray, labels: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Coarse, noisy class probabilities: from the labels when known, else a smooth field."""
    h, w = image.shape[:2]
    if labels is None:
        g = torch.Generator().manual_seed(seed)
        coarse = torch.randn(1, NUM_LABELS, -(-h // 32), -(-w // 32), generator=g) * 3
        logits = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
        return torch.softmax(logits[0], 0).numpy()
    return coarse_probabilities(labels, NUM_LABELS, stride=8, noise=1.0, seed=seed)


def run_crf(module, image: np.ndarray, unary: np.ndarray, iterations: int) -> np.ndarray:
    """Exactly what a pydensecrf user writes (the kernels of ``SETTINGS``)."""
    h, w = image.shape[:2]
    crf = module.DenseCRF2D(w, h, NUM_LABELS)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=SETTINGS["gaussian_sxy"], compat=SETTINGS["gaussian_compat"])
    crf.addPairwiseBilateral(
        sxy=SETTINGS["bilateral_sxy"],
        srgb=SETTINGS["bilateral_srgb"],
        rgbim=image,
        compat=SETTINGS["bilateral_compat"],
    )
    return np.array(crf.inference(iterations))


def timed(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` by ``clock``."""
    samples = []
    for _ in range(repeats):
        start = clock()
        fn()
        samples.append(clock() - start)
    return statistics.median(samples)


def compare_all(reference, inputs, repeats: int) -> list[dict]:
    """Interleaved timings of both libraries on every input, plus agreement.

    Repeats go round-robin over the inputs (and over T=10 / T=0 runs of both libraries),
    so a burst of load from other tenants of a shared machine spreads over all of them
    instead of skewing one photo; medians per input.
    """
    results, times = [], []
    for image, unary in inputs:
        q_ref = run_crf(reference, image, unary, 10)
        q = run_crf(ours, image, unary, 10)
        results.append(
            {
                "agreement": float((q.argmax(0) == q_ref.argmax(0)).mean()),
                "max_dq": float(np.abs(q - q_ref).max()),
            }
        )
        times.append({"ref": [], "ref0": [], "ours": [], "ours0": []})
    for _ in range(repeats):
        for (image, unary), samples in zip(inputs, times):
            for key, module, t in (
                ("ref", reference, 10),
                ("ours", ours, 10),
                ("ref0", reference, 0),
                ("ours0", ours, 0),
            ):
                samples[key].append(
                    timed(lambda m=module, t=t, i=image, u=unary: run_crf(m, i, u, t), 1)
                )
    for result, samples in zip(results, times):
        med = {k: statistics.median(v) for k, v in samples.items()}
        result.update(
            total_ratio=med["ours"] / med["ref"],
            iter_ratio=(med["ours"] - med["ours0"]) / max(med["ref"] - med["ref0"], 1e-9),
            ref_ms=med["ref"] * 1e3,
            ours_ms=med["ours"] * 1e3,
        )
    return results


def build_rows(reference, data, repeats: int) -> list[dict]:
    """Per photo and bilateral setting: median ms of ``build_lattice`` + its normaliser
    (``row_sums``) and of pydensecrf's ``addPairwiseBilateral`` (build + normalisation),
    interleaved round-robin."""
    settings = ((80.0, 13.0), (50.0, 5.0))
    cases = []
    for name, image, _ in data:
        img = torch.from_numpy(np.ascontiguousarray(image))
        for sxy, srgb in settings:
            features = bilateral_features(img, sxy, srgb)

            def ours_build(f=features):
                return build_lattice(f).row_sums

            def ref_build(im=image, sxy=sxy, srgb=srgb):
                crf = reference.DenseCRF2D(im.shape[1], im.shape[0], NUM_LABELS)
                start = time.perf_counter()
                crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=im, compat=10)
                return time.perf_counter() - start

            vertices = build_lattice(features).num_vertices
            samples = {"ours": [], "ref": []}
            cases.append((name, sxy, srgb, vertices, ours_build, ref_build, samples))
    for _ in range(repeats):
        for *_, ours_build, ref_build, samples in cases:
            samples["ours"].append(timed(ours_build, 1))
            samples["ref"].append(ref_build())
    rows = []
    for name, sxy, srgb, vertices, _, _, samples in cases:
        ours_ms = statistics.median(samples["ours"]) * 1e3
        ref_ms = statistics.median(samples["ref"]) * 1e3
        rows.append(
            {
                "photo": name,
                "sxy": sxy,
                "srgb": srgb,
                "vertices": vertices,
                "threads": torch.get_num_threads(),
                "ours_ms": ours_ms,
                "ref_ms": ref_ms,
            }
        )
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A markdown table: the header, its separator, one line per row of cells."""
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def print_build_table(rows: list[dict]) -> None:
    header = ["photo", "sxy / srgb", "vertices", "threads", "deepcrf build + normaliser ms"]
    header += ["pydensecrf addPairwiseBilateral ms", "ratio"]
    print_table(
        header,
        [
            [
                row["photo"],
                f"{row['sxy']:g} / {row['srgb']:g}",
                str(row["vertices"]),
                str(row["threads"]),
                f"{row['ours_ms']:.1f}",
                f"{row['ref_ms']:.1f}",
                f"{row['ours_ms'] / row['ref_ms']:.2f}x",
            ]
            for row in rows
        ],
    )


def peak_memory_mb(library: str, photo_index: int) -> float:
    """Peak RSS growth (MB) of one refinement, measured in a fresh child process."""
    code = f"""
import sys, numpy as np, torch
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_dense as b
b.SETTINGS.update({SETTINGS!r})
name, image, labels = b.photos()[{photo_index}]
unary = b.unary_from_softmax(b.probabilities(image, labels))
module = b.ours if {library!r} == "deepcrf" else __import__("pydensecrf.densecrf", fromlist=["x"])
from _memory import rss_kib
base = rss_kib()[0]  # resident now; the peak afterwards minus this is the growth
b.run_crf(module, image, unary, 10)
print((rss_kib()[1] - base) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def size_scaling(reference, image, sizes_mp, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    base = Image.fromarray(image)
    aspect = image.shape[1] / image.shape[0]
    for mp in sizes_mp:
        h = round((mp * 1e6 / aspect) ** 0.5)
        w = round(h * aspect)
        img = np.array(base.resize((w, h), Image.BILINEAR))
        unary = unary_from_softmax(probabilities(img, None))
        row = {"mp": h * w / 1e6, "size": f"{w}x{h}"}
        row["ours_ms"] = timed(lambda i=img, u=unary: run_crf(ours, i, u, 10), 2) * 1e3
        if reference is not None and mp <= 1.0:
            row["ref_ms"] = timed(lambda i=img, u=unary: run_crf(reference, i, u, 10), 1) * 1e3
        rows.append(row)
    return rows


def gpu_rows(image, unary_probs, batch_sizes=(1, 4, 16)) -> list[dict]:
    from deepcrf import refine

    device = torch.device("cuda")
    probs = torch.from_numpy(unary_probs).to(device)
    img = torch.from_numpy(image).permute(2, 0, 1).to(device)
    rows = []
    for b in batch_sizes:
        p, im = probs.expand(b, -1, -1, -1).contiguous(), img.expand(b, -1, -1, -1).contiguous()
        refine(p, im, **SETTINGS)
        torch.cuda.synchronize()

        def step(p=p, im=im):
            refine(p, im, **SETTINGS)
            torch.cuda.synchronize()

        seconds = timed(step, 10)
        rows.append({"batch": b, "ms_per_batch": seconds * 1e3, "images_per_s": b / seconds})
    return rows


def memory_per_megapixel(sizes_mp: list[float], budget: str) -> list[dict]:
    """Peak RSS growth per megapixel of ``deepcrf.refine`` (numpy, 21 labels, T=5) on the
    first photo resized to each size: untiled (``tile=False``, the memory before tiling
    existed) and with the memory budget ``budget`` (tiles above it); fresh child processes.
    The marginals returned (84 bytes per pixel) are not counted."""
    rows = []
    for mp in sizes_mp:
        row = {"mp": mp}
        for key, tile, env_budget in (("untiled", "False", None), ("budget", "None", budget)):
            code = f"""
import sys, numpy as np
from PIL import Image
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_dense as b
from _memory import rss_kib
from deepcrf import refine
name, image, labels = b.photos()[0]
scale = ({mp} * 1e6 / (image.shape[0] * image.shape[1])) ** 0.5
size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
image = np.array(Image.fromarray(image).resize(size, Image.BICUBIC))
if labels is not None:
    labels = np.array(Image.fromarray(labels.astype(np.uint8)).resize(size, Image.NEAREST))
probs = b.probabilities(image, labels)
base = rss_kib()[0]
q = refine(probs, image, iterations=5, tile={tile})
print((rss_kib()[1] - base) / 1024 - q.nbytes / 2**20)
"""
            env = dict(__import__("os").environ)
            if env_budget:
                env["DEEPCRF_MEMORY_BUDGET"] = env_budget
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            )
            row[key] = float(out.stdout.strip().splitlines()[-1])
        rows.append(row)
    return rows


# spins until its parent ends, so a killed benchmark leaves no busy process behind
_SPIN = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` competing processes spinning on the CPU while the body runs."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def deepcrf_threads(policy: str | None, threads: int):
    """``DEEPCRF_THREADS=policy`` (None: the default) and ``torch.set_num_threads(threads)``."""
    saved, saved_threads = os.environ.get("DEEPCRF_THREADS"), torch.get_num_threads()
    if policy is None:
        os.environ.pop("DEEPCRF_THREADS", None)
    else:
        os.environ["DEEPCRF_THREADS"] = policy
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if saved is None:
            os.environ.pop("DEEPCRF_THREADS", None)
        else:
            os.environ["DEEPCRF_THREADS"] = saved


def under_load(reference, data, repeats: int, busy: int) -> list[dict]:
    """``deepcrf.refine`` (T=10) quiet and with ``busy`` competing processes: default
    settings, forced to torch's default thread count, on 1 thread, and pydensecrf; timings
    interleaved round-robin over photos and variants (deepcrf's variants in reverse order
    every other round, so that none always runs right after another), medians per photo
    and condition, and the per-round ratios of default to 1 thread ("pairs")."""
    default_threads = torch.get_num_threads()
    variants = {
        "default": (None, default_threads),
        f"fixed {default_threads} threads": ("fixed", default_threads),
        "1 thread": ("fixed", 1),
    }
    inputs = [(name, image, probabilities(image, labels)) for name, image, labels in data]
    rows = []
    for condition, count in (("none started", 0), (f"{busy} busy started", busy)):
        samples = {name: {key: [] for key in [*variants, "pydensecrf"]} for name, _, _ in inputs}
        policy = {name: [] for name, _, _ in inputs}  # default's (start, end) thread counts
        with busy_processes(count):
            for _, image, probs in inputs:  # warm-up
                refine(probs, image, **SETTINGS)
            for round_ in range(repeats):
                order = list(variants.items())
                if round_ % 2:
                    order.reverse()
                for name, image, probs in inputs:
                    for key, (env, threads) in order:
                        with deepcrf_threads(env, threads):
                            samples[name][key].append(
                                timed(lambda p=probs, i=image: refine(p, i, **SETTINGS), 1)
                            )
                        if key == "default":
                            policy[name].append(last_call())
                    if reference is not None:
                        unary = unary_from_softmax(probs)
                        samples[name]["pydensecrf"].append(
                            timed(lambda i=image, u=unary: run_crf(reference, i, u, 10), 1)
                        )
            load = os.getloadavg()[0]  # the machine's 1-minute load at the end of the condition
        for name, _, _ in inputs:
            med = {k: statistics.median(v) * 1e3 for k, v in samples[name].items() if v}
            threads = " ".join(f"{a}>{b}" for a, b in policy[name])
            pairs = [a / b for a, b in zip(samples[name]["default"], samples[name]["1 thread"])]
            rows.append(
                {
                    "condition": condition,
                    "load": load,
                    "photo": name,
                    **med,
                    "threads": threads,
                    "pairs": pairs,
                }
            )
    return rows


def print_load_table(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("condition", "load", "photo", "threads", "pairs")]
    header = ["busy processes", "load avg", "photo", *(f"{k} ms" for k in keys)]
    header += ["default / 1 thread", "default / pydensecrf"]
    table = []
    for row in rows:
        ref = row.get("pydensecrf")
        table.append(
            [row["condition"], f"{row['load']:.1f}", row["photo"]]
            + [f"{row[k]:.0f}" for k in keys]
            + [f"{row['default'] / row['1 thread']:.2f}x"]
            + [f"{row['default'] / ref:.2f}x" if ref else "-"]
        )
    print_table(header, table)
    print("\nDefault / 1 thread per round (the two runs of a photo in one round), medians:")
    for condition in dict.fromkeys(row["condition"] for row in rows):
        pairs = [p for row in rows if row["condition"] == condition for p in row["pairs"]]
        print(
            f"- {condition}: {statistics.median(pairs):.2f}x over {len(pairs)} pairs "
            f"(quartiles {_quartiles(pairs)})"
        )
    print("\nThreads of each default call, chosen at its start > at its end (a checkpoint found")
    print("the team waiting for a CPU and went on with 1 thread when they differ):")
    for row in rows:
        print(f"- {row['condition']}, {row['photo']}: {row['threads']}")


def _quartiles(values: list[float]) -> str:
    """'q1-q3' of ``values`` (two decimals; the values themselves when fewer than 4)."""
    if len(values) < 4:
        return ", ".join(f"{v:.2f}" for v in sorted(values))
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.2f}-{q3:.2f}"


def fused_lattice(image: np.ndarray):
    """The block lattice the dense CRF iterates on (``SETTINGS``, symmetric normalisation
    with Potts weights folded into splat/slice), built from public pieces."""
    h, w = image.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(image))
    sxy, srgb = SETTINGS["bilateral_sxy"], SETTINGS["bilateral_srgb"]
    parts = []
    for features, weight in (
        (grid_features((h, w), SETTINGS["gaussian_sxy"]), SETTINGS["gaussian_compat"]),
        (bilateral_features(img, sxy, srgb), SETTINGS["bilateral_compat"]),
    ):
        lattice = build_lattice(features)
        before, after = normalization_scales(lattice.row_sums, "symmetric")
        parts.append(lattice.scale(before, after * weight))
    return stack_lattices(parts)


def iteration_steps(lattice, unary: torch.Tensor) -> dict:
    """Closures timing each step of one mean-field iteration (as ``crf.mean_field`` runs
    it on the exp path) and a copy of an (N, L) buffer."""
    q = torch.softmax(unary, 1)
    copy = torch.empty_like(q)
    vertices = lattice.splat_values(q)
    blurred = lattice.blur(vertices)
    logits = lattice.slice_values(blurred)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        e = x.exp_()
        return e.div_(e.sum(1, keepdim=True))

    return {
        "copy (N, L)": lambda: copy.copy_(q),
        "splat": lambda: lattice.splat_values(q),
        "blur": lambda: lattice.blur(vertices),
        "slice": lambda: lattice.slice_values(blurred),
        "unary add": lambda: logits.add(unary),
        "normalise": lambda: normalise(copy.copy_(logits)),
        "iteration": lambda: normalise(lattice.slice_values(lattice.splat_blur(q), add=unary)),
    }


def iteration_breakdown(data, repeats: int) -> list[dict]:
    """Per photo: ms of each step of one mean-field iteration and of an (N, L) copy
    (``normalise`` includes one copy of the logits, subtracted when printed), on the
    threads deepcrf's policy picks now (``deepcrf.threads``); fastest of the repeats, in the
    thread's CPU time when that is 1 thread."""
    rows = []
    for name, image, labels in data:
        with use_threads(choose_threads()):
            rows.append(_breakdown_row(name, image, labels, repeats))
    return rows


def _breakdown_row(name: str, image: np.ndarray, labels, repeats: int) -> dict:
    """One photo's row of ``iteration_breakdown``."""
    lattice = fused_lattice(image)
    probs = torch.from_numpy(probabilities(image, labels)).reshape(NUM_LABELS, -1)
    unary = torch.log(probs.clamp(min=1e-5)).t().contiguous()
    steps = iteration_steps(lattice, unary)
    samples = {key: [] for key in steps}
    # on one thread, its CPU time: what the step costs, without the time other tenants'
    # processes held the core (wall time swings 10x on a busy machine)
    single = torch.get_num_threads() == 1
    clock = time.thread_time if single else time.perf_counter
    for _ in range(repeats):
        for key, fn in steps.items():
            samples[key].append(timed(fn, 3, clock))
    # the fastest of the repeats: the least disturbed by other tenants of a shared machine
    med = {k: min(v) * 1e3 for k, v in samples.items()}
    med["normalise"] = max(med["normalise"] - med["copy (N, L)"], 0.0)
    threads = f"{torch.get_num_threads()} ({'CPU time' if single else 'wall'})"
    return {"photo": name, "threads": threads, "points": unary.shape[0], **med}


def print_breakdown(rows: list[dict]) -> None:
    steps = ("splat", "blur", "slice", "unary add", "normalise")
    header = ["photo", "threads", "copy (N, L) ms", "GB/s", *steps]
    header += ["iteration ms", "floor ms (1.5 copies)", "iteration / floor"]
    table = []
    for row in rows:
        copy = row["copy (N, L)"]
        gbs = 2 * row["points"] * NUM_LABELS * 4 / (copy * 1e-3) / 1e9
        floor = 1.5 * copy
        table.append(
            [row["photo"], str(row["threads"]), f"{copy:.2f}", f"{gbs:.1f}"]
            + [f"{row[k]:.2f}" for k in steps]
            + [f"{row['iteration']:.2f}", f"{floor:.2f}", f"{row['iteration'] / floor:.1f}x"]
        )
    print_table(header, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="0.1,0.25,0.5,1,2,4")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photos", type=Path, default=VOC_SAMPLES, help="folder of VOC photos")
    parser.add_argument("--load", action="store_true", help="add the quiet/loaded comparison")
    parser.add_argument("--busy", type=int, default=1, help="competing processes for --load")
    parser.add_argument("--breakdown", action="store_true", help="per-iteration breakdown")
    parser.add_argument(
        "--build", action="store_true", help="bilateral lattice build vs pydensecrf's"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--params",
        choices=sorted(PRESETS),
        default="pydensecrf",
        help="the CRF of every table, both libraries (a deepcrf.params preset): pydensecrf's "
        "README example (3/3 + 80/13/10) or e.g. deeplab_largefov, deepcrf.refine's "
        "defaults (3/3 + 121/5/4)",
    )
    parser.add_argument(
        "--memory",
        metavar="MP",
        help="only print peak memory per megapixel at these sizes (e.g. 0.5,2,4), untiled "
        "vs tiled within --budget",
    )
    parser.add_argument("--budget", default="1G", help="DEEPCRF_MEMORY_BUDGET for --memory")
    args = parser.parse_args()
    SETTINGS.update(PRESETS[args.params].to_dict())
    if args.memory:
        sizes = [float(s) for s in args.memory.split(",")]
        print(f"| megapixels | untiled MB/MP | tiled within {args.budget}: MB/MP | ratio |")
        print("|---|---|---|---|")
        for row in memory_per_megapixel(sizes, args.budget):
            before, after = row["untiled"] / row["mp"], row["budget"] / row["mp"]
            print(f"| {row['mp']:g} | {before:.0f} | {after:.0f} | {after / before:.2f} |")
        return
    try:
        import pydensecrf.densecrf as reference
    except ImportError:
        reference = None
        print("pydensecrf is not installed: ratios are skipped (pip install pydensecrf2)")

    results: dict = {"photos": [], "memory": [], "sizes": []}
    data = photos(args.photos)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    print(f"CRF ({args.params}): {SETTINGS}\n")
    if args.breakdown:
        results["breakdown"] = iteration_breakdown(data, args.repeats)
        print_breakdown(results["breakdown"])
        print()
    if args.load:
        results["load"] = under_load(reference, data, args.repeats, args.busy)
        print_load_table(results["load"])
        print()
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    if args.build and reference is not None:
        results["build"] = []
        for threads in thread_counts or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            results["build"] += build_rows(reference, data, args.repeats)
        print_build_table(results["build"])
        print()
    if reference is not None and thread_counts:
        print(
            "| photo | size | threads | pydensecrf ms | deepcrf ms | total ratio |"
            " per-iteration ratio | label agreement | max abs dQ |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        inputs = [
            (image, unary_from_softmax(probabilities(image, labels))) for _, image, labels in data
        ]
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for (name, image, _), r in zip(data, compare_all(reference, inputs, args.repeats)):
                r.update(photo=name, threads=threads)
                results["photos"].append(r)
                print(
                    f"| {name} | {image.shape[1]}x{image.shape[0]} | {threads} | "
                    f"{r['ref_ms']:.0f} | {r['ours_ms']:.0f} | {r['total_ratio']:.2f}x | "
                    f"{r['iter_ratio']:.2f}x | {r['agreement']:.4%} | {r['max_dq']:.1e} |"
                )
        print()
        print("| library | peak memory growth, MB (first photo, T=10) |")
        print("|---|---|")
        for library in ("pydensecrf", "deepcrf"):
            mb = peak_memory_mb(library, 0)
            results["memory"].append({"library": library, "mb": mb})
            print(f"| {library} | {mb:.0f} |")
        print()
    sizes = [float(s) for s in args.sizes.split(",") if s]
    rows = size_scaling(reference, data[0][1], sizes, (thread_counts or [2])[0]) if sizes else []
    results["sizes"] = rows
    if rows:
        print("| megapixels | size | deepcrf ms | ns per pixel | pydensecrf ms |")
        print("|---|---|---|---|---|")
    for row in rows:
        ref = f"{row['ref_ms']:.0f}" if "ref_ms" in row else "-"
        print(
            f"| {row['mp']:.2f} | {row['size']} | {row['ours_ms']:.0f} | "
            f"{row['ours_ms'] * 1e6 / (row['mp'] * 1e6):.0f} | {ref} |"
        )
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device available")
        name, image, labels = data[0]
        rows = gpu_rows(image, probabilities(image, labels))
        results["gpu"] = rows
        print(f"\n{torch.cuda.get_device_name()} | batch | ms per batch | images/s |")
        for row in rows:
            print(f"| | {row['batch']} | {row['ms_per_batch']:.1f} | {row['images_per_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
