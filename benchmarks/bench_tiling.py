"""Tiled refinement: agreement with the untiled CRF, and peak memory of ``deepcrf refine``
streaming a very large image.

Prints markdown tables:
  1. ``--agreement``: real photos (../shared/data/voc-samples) upscaled to ``--mp``
     megapixels, refined with the default ``CRFParams`` untiled and with forced small tiles
     (``--tile``, overlap from the bandwidths): label agreement and max |dQ| between the two,
     and the time ratio;
  2. ``--stream MP``: writes a synthetic MP-megapixel photo and its probabilities
     (``--labels`` classes) to a temporary folder, runs ``deepcrf refine`` on them in a child
     process and reports its peak RSS (ru_maxrss) and time.

Usage: python benchmarks/bench_tiling.py --agreement [--mp 1 --tile 256]
       python benchmarks/bench_tiling.py --stream 100 [--labels 4 --iterations 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepcrf import refine
from deepcrf.data import coarse_probabilities
from deepcrf.params import CRFParams
from deepcrf.tiling import overlap_pixels

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPCRF_SHARED", ROOT.parent / "shared"))
VOC_SAMPLES = SHARED / "data" / "voc-samples"
NUM_LABELS = 21


def upscaled_photos(mp: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, label map) of every VOC sample photo, upscaled to ``mp`` megapixels."""
    if not VOC_SAMPLES.is_dir():
        sys.exit(f"no photos: {VOC_SAMPLES} is absent")
    out = []
    for path in sorted(VOC_SAMPLES.glob("*.png")):
        if path.stem.endswith("_labels"):
            continue
        image = Image.open(path).convert("RGB")
        labels = Image.open(path.with_name(path.stem + "_labels.png"))
        scale = (mp * 1e6 / (image.width * image.height)) ** 0.5
        size = (round(image.width * scale), round(image.height * scale))
        big = np.array(image.resize(size, Image.BICUBIC))
        lab = np.array(labels.resize(size, Image.NEAREST)).astype(np.int64)
        out.append((path.stem, big, np.where(lab < NUM_LABELS, lab, 0)))
    return out


def agreement(mp: float, tile: int, iterations: int, count: int) -> None:
    print(
        f"| photo ({mp:g} MP) | tile core | overlap | label agreement | max abs dQ | "
        "time tiled / untiled |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    params = CRFParams(iterations=iterations).to_dict()
    overlap = overlap_pixels(2, [params["gaussian_sxy"], params["bilateral_sxy"]])[0]
    for name, image, labels in upscaled_photos(mp)[:count]:
        probs = coarse_probabilities(labels, NUM_LABELS, stride=32, noise=1.0, seed=0)
        start = time.perf_counter()
        whole = refine(probs, image, tile=False, **params)
        t_whole = time.perf_counter() - start
        start = time.perf_counter()
        tiled = refine(probs, image, tile=tile, **params)
        t_tiled = time.perf_counter() - start
        agree = float((whole.argmax(0) == tiled.argmax(0)).mean())
        print(
            f"| {name} {image.shape[1]}x{image.shape[0]} | {tile} | {overlap} | "
            f"{agree:.4%} | {np.abs(whole - tiled).max():.3f} | {t_tiled / t_whole:.2f} |"
        )


def stream(mp: float, num_labels: int, iterations: int, budget: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="deepcrf-stream-") as tmp:
        folder = Path(tmp)
        side = round((mp * 1e6) ** 0.5)
        rng = np.random.default_rng(0)
        blocks = rng.integers(0, 256, (side // 64 + 1, side // 64 + 1, 3), dtype=np.uint8)
        image = np.kron(blocks, np.ones((64, 64, 1), dtype=np.uint8))[:side, :side]
        image = np.clip(image + rng.integers(0, 8, image.shape, dtype=np.uint8), 0, 255)
        Image.fromarray(image).save(folder / "big.png")
        del image
        probs = np.lib.format.open_memmap(
            folder / "big.npy", mode="w+", dtype=np.float32, shape=(num_labels, side, side)
        )
        for start in range(0, side, 1024):
            rows = slice(start, min(start + 1024, side))
            coarse = rng.random((num_labels, 1, side // 256 + 1)).astype(np.float32) + 0.1
            band = np.repeat(np.repeat(coarse, 256, axis=2)[:, :, :side], rows.stop - start, 1)
            probs[:, rows] = band / band.sum(0, keepdims=True)
        probs.flush()
        del probs
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        if budget:
            env["DEEPCRF_MEMORY_BUDGET"] = budget
        cmd = [sys.executable, "-m", "deepcrf", "refine", str(folder / "big.png")]
        cmd += ["--probs", str(folder / "big.npy"), "--out", str(folder / "out.png")]
        cmd += ["--iterations", str(iterations)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        out = Image.open(folder / "out.png")
        print("| image | labels | iterations | peak RSS | time | output |")
        print("| --- | --- | --- | --- | --- | --- |")
        print(
            f"| {side}x{side} ({side * side / 1e6:.0f} MP) | {num_labels} | {iterations} | "
            f"{peak_gb:.2f} GB | {elapsed / 60:.1f} min | {out.size[0]}x{out.size[1]} "
            f"{out.mode} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--mp", type=float, default=1.0)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--photos", type=int, default=4, help="how many photos (--agreement)")
    parser.add_argument("--stream", type=float, help="megapixels of the streamed image")
    parser.add_argument("--labels", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--budget", help="DEEPCRF_MEMORY_BUDGET for the streamed run")
    args = parser.parse_args()
    if args.agreement:
        agreement(args.mp, args.tile, args.iterations, args.photos)
    if args.stream:
        stream(args.stream, args.labels, args.iterations, args.budget)
    if not (args.agreement or args.stream):
        parser.print_help()


if __name__ == "__main__":
    main()
