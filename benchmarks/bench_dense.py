"""Dense CRF post-processing: deepcrf vs pydensecrf on natural photos.

Prints markdown tables (paste them into README):
  1. per photo at VOC size, 21 labels, sxy=3/compat=3 + sxy=80/srgb=13/compat=10, T=10:
     total time (lattice build + inference) and per-iteration time as ratios to
     pydensecrf measured in the same run (medians of repeats interleaved round-robin over
     photos and libraries), label agreement and max |dQ|; with 2 threads and 1 thread;
  2. peak memory of one refinement (child processes, ru_maxrss growth);
  3. time against image size from 0.1 to 4 megapixels (per-pixel cost = linearity);
  4. with --device cuda: latency per image and batched throughput;
  5. ``--memory 0.5,2,4``: only peak memory per megapixel, untiled vs tiled within a
     budget (``--budget 1G``; see ``deepcrf.tiling``).

Usage: python benchmarks/bench_dense.py [--repeats 5] [--sizes 0.1,0.25,0.5,1,2,4]
Needs pydensecrf (``pip install pydensecrf2``) for the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepcrf.compat.pydensecrf import densecrf as ours
from deepcrf.compat.pydensecrf.utils import unary_from_softmax
from deepcrf.data import coarse_probabilities

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLES = ROOT.parent / "shared" / "data" / "voc-samples"
NUM_LABELS = 21


def photos() -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, RGB uint8 image, label map or None) for every natural photo available."""
    found = []
    if VOC_SAMPLES.is_dir():
        for path in sorted(VOC_SAMPLES.glob("*.png")):
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
    """Exactly what a pydensecrf user writes."""
    h, w = image.shape[:2]
    crf = module.DenseCRF2D(w, h, NUM_LABELS)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    return np.array(crf.inference(iterations))


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
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


def peak_memory_mb(library: str, photo_index: int) -> float:
    """Peak RSS growth (MB) of one refinement, measured in a fresh child process."""
    code = f"""
import sys, numpy as np, torch
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import bench_dense as b
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
        refine(p, im)
        torch.cuda.synchronize()

        def step(p=p, im=im):
            refine(p, im)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="0.1,0.25,0.5,1,2,4")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--memory",
        metavar="MP",
        help="only print peak memory per megapixel at these sizes (e.g. 0.5,2,4), untiled "
        "vs tiled within --budget",
    )
    parser.add_argument("--budget", default="1G", help="DEEPCRF_MEMORY_BUDGET for --memory")
    args = parser.parse_args()
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
    data = photos()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available\n")
    if reference is not None:
        print(
            "| photo | size | threads | pydensecrf ms | deepcrf ms | total ratio |"
            " per-iteration ratio | label agreement | max abs dQ |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        inputs = [
            (image, unary_from_softmax(probabilities(image, labels))) for _, image, labels in data
        ]
        for threads in [int(t) for t in args.threads.split(",")]:
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
    sizes = [float(s) for s in args.sizes.split(",")]
    rows = size_scaling(reference, data[0][1], sizes, int(args.threads.split(",")[0]))
    results["sizes"] = rows
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
