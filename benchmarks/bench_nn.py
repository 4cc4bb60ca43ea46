"""Trainable dense CRF: forward + backward at VOC size against pydensecrf's inference.

Each case (batch size B, iterations T, CPU threads) runs in a fresh subprocess so that its
peak memory is its own: the DenseCRF layer (default kernels, learnable weights) computes
forward + cross-entropy + backward on B photos of 500 x 375 with L = 21 (median of
--repeats after one warm-up), then pydensecrf (if installed) builds its CRF and runs
``inference(T)`` on the same images in the same process. Times are reported as ratios to
pydensecrf because the machine is shared; "pyd" counts the whole pydensecrf call
(construction, which builds its lattices, plus inference, as the layer's time includes its
lattice builds), "pyd inf" inference alone. Peak memory growth is the peak RSS of the
layer runs minus the RSS before them (on CUDA: peak allocated GPU memory).

    PYTHONPATH=src python benchmarks/bench_nn.py [--repeats 3] [--device cuda]
        [--learn-bandwidths 0,1]   # also the layer with learnable bandwidths, and a table
                                   # of its time against the plain layer's

With ``--learn-bandwidths 0,1`` a second table compares the two layers in one process per
(B, T, threads), their steps interleaved (plain, learned, learned, plain, ...) so that both
see the same machine load: medians of wall-clock and of CPU time (the process's, all
threads), and their ratios. On a shared machine the CPU-time ratio is the steadier one.

Note: with B=4 every (N, L) tensor is 63 MB, above glibc's largest mmap threshold, so each
one is a fresh mmap whose pages fault in on first touch; B=4 T=5 on one thread measured
3.0 s as is and 2.1 s with MALLOC_MMAP_THRESHOLD_=4294967296 (an allocator effect, not the
CRF's arithmetic; jemalloc/tcmalloc or that variable avoid it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _memory import rss_kib

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc-samples"
H, W, L = 375, 500, 21


def photos(batch: int) -> np.ndarray:
    """(B, H, W, 3) uint8: the VOC sample photos resized, or smooth synthetic images."""
    from PIL import Image

    files = sorted(p for p in SAMPLES.glob("*.png") if not p.stem.endswith("_labels"))
    out = []
    for i in range(batch):
        if files:
            with Image.open(files[i % len(files)]) as im:
                out.append(np.asarray(im.convert("RGB").resize((W, H)), dtype=np.uint8))
        else:
            yy, xx = np.mgrid[0:H, 0:W]
            img = np.stack([(xx + 40 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
            out.append(img.astype(np.uint8))
    return np.stack(out)


def _layer_step(batch: int, iterations: int, device: str, learn: bool):
    """(one forward + cross-entropy + backward of a fresh DenseCRF, the photos (B, H, W, 3),
    the unary energies) for B photos; the layer has the pydensecrf reference's kernels."""
    import torch
    import torch.nn.functional as F

    from deepcrf.nn import DenseCRF
    from deepcrf.params import PRESETS

    rng = np.random.default_rng(0)
    images = photos(batch)
    unary = torch.from_numpy(rng.normal(0, 2, (batch, L, H, W)).astype(np.float32)).to(device)
    image = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device)
    target = torch.from_numpy(rng.integers(0, L, (batch, H, W))).to(device)
    # the kernels of the pydensecrf reference below (not the library's defaults)
    crf = DenseCRF(
        L,
        iterations=iterations,
        learn_bandwidths=learn,
        **{k: v for k, v in PRESETS["pydensecrf"].to_dict().items() if k != "iterations"},
    ).to(device)

    def step():
        x = unary.clone().requires_grad_(True)
        F.cross_entropy(crf(x, image), target).backward()

    return step, images, unary


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_pair(batch: int, iterations: int, threads: int, repeats: int, device: str) -> dict:
    """The plain layer and the one with learnable bandwidths in one process, their steps
    interleaved (ABBA order): medians of wall-clock and CPU time of each."""
    import torch

    torch.set_num_threads(threads)
    steps = [_layer_step(batch, iterations, device, learn)[0] for learn in (False, True)]
    for step in steps:  # warm-up (grid-lattice cache, allocator)
        step()
    wall: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    for r in range(repeats):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[k]()
            _sync(device)
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    med = statistics.median
    return {
        "plain": med(wall[0]),
        "learn": med(wall[1]),
        "plain_cpu": med(cpu[0]),
        "learn_cpu": med(cpu[1]),
    }


def run_case(
    batch: int, iterations: int, threads: int, repeats: int, device: str, learn: int = 0
) -> dict:
    import torch

    torch.set_num_threads(threads)
    step, images, unary = _layer_step(batch, iterations, device, bool(learn))

    def sync():
        _sync(device)

    rss_before, _ = rss_kib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for r in range(repeats + 1):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if r:  # the first run warms up caches (grid kernel, allocator)
            times.append(time.perf_counter() - start)
    _, rss_peak = rss_kib()
    result = {"layer": statistics.median(times), "mem_mb": (rss_peak - rss_before) / 1024}
    if device.startswith("cuda"):
        result["mem_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        return result
    energies = (-torch.log_softmax(unary.cpu(), 1)).reshape(batch, L, -1).numpy()
    total, inference = [], []
    for _ in range(repeats):
        t_total = t_inf = 0.0
        for b in range(batch):
            start = time.perf_counter()
            crf_ref = dcrf.DenseCRF2D(W, H, L)
            crf_ref.setUnaryEnergy(np.ascontiguousarray(energies[b]))
            crf_ref.addPairwiseGaussian(sxy=3, compat=3)
            crf_ref.addPairwiseBilateral(
                sxy=80, srgb=13, rgbim=np.ascontiguousarray(images[b]), compat=10
            )
            mid = time.perf_counter()
            crf_ref.inference(iterations)
            end = time.perf_counter()
            t_total += end - start
            t_inf += end - mid
        total.append(t_total)
        inference.append(t_inf)
    result["pyd"] = statistics.median(total)
    result["pyd_inf"] = statistics.median(inference)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--iterations", default="5,10")
    parser.add_argument("--threads", default="2,1")
    parser.add_argument(
        "--learn-bandwidths",
        default="0",
        help="0, 1 or 0,1: layers without / with learnable bandwidths (Schwing & Urtasun)",
    )
    parser.add_argument(
        "--pair-repeats", type=int, default=6, help="interleaved steps of each layer (pairs)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case as JSON
    parser.add_argument("--pair", help=argparse.SUPPRESS)  # internal: one pair as JSON
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(run_case(**case, repeats=args.repeats, device=args.device)))
        return
    if args.pair:
        case = json.loads(args.pair)
        print(json.dumps(run_pair(**case, repeats=args.pair_repeats, device=args.device)))
        return
    from tqdm import tqdm

    cases = [
        {"batch": b, "iterations": t, "threads": n, "learn": lb}
        for lb in map(int, args.learn_bandwidths.split(","))
        for n in map(int, args.threads.split(","))
        for b in map(int, args.batches.split(","))
        for t in map(int, args.iterations.split(","))
    ]
    rows = [(case, _subprocess(args, "--case", case)) for case in tqdm(cases, desc="cases")]
    print(f"\nDenseCRF forward+backward, {W}x{H}, L={L}, device={args.device}\n")
    print(
        "| B | T | threads | learn bw | layer (s) | pyd (s) | layer / pyd | layer / pyd inf "
        "| learn / plain | peak mem growth (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    plain = {
        (c["batch"], c["iterations"], c["threads"]): r["layer"] for c, r in rows if not c["learn"]
    }
    for case, r in rows:
        pyd = r.get("pyd")
        ratio = f"{r['layer'] / pyd:.2f}x" if pyd else "n/a"
        ratio_inf = f"{r['layer'] / r['pyd_inf']:.2f}x" if pyd else "n/a"
        pyd_s = f"{pyd:.3f}" if pyd else "n/a"
        base = plain.get((case["batch"], case["iterations"], case["threads"]))
        vs_plain = f"{r['layer'] / base:.2f}x" if base and case["learn"] else "-"
        print(
            f"| {case['batch']} | {case['iterations']} | {case['threads']} | "
            f"{'yes' if case['learn'] else 'no'} | {r['layer']:.3f} | {pyd_s} | {ratio} | "
            f"{ratio_inf} | {vs_plain} | {r['mem_mb']:.0f} |"
        )
    learned = [(c, r) for c, r in rows if c["learn"]]
    if not (learned and plain):
        return
    pairs = []
    for case, _ in tqdm(learned, desc="interleaved pairs"):
        pair = {k: case[k] for k in ("batch", "iterations", "threads")}
        pairs.append((pair, _subprocess(args, "--pair", pair)))
    print(
        "\nLearnable bandwidths against the same layer without them: one process per row, "
        f"steps interleaved, medians of {args.pair_repeats} each\n"
    )
    print(
        "| B | T | threads | plain (s) | learn bw (s) | learn / plain | plain CPU (s) "
        "| learn bw CPU (s) | learn / plain CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case, r in pairs:
        print(
            f"| {case['batch']} | {case['iterations']} | {case['threads']} | {r['plain']:.3f} | "
            f"{r['learn']:.3f} | {r['learn'] / r['plain']:.2f}x | {r['plain_cpu']:.3f} | "
            f"{r['learn_cpu']:.3f} | {r['learn_cpu'] / r['plain_cpu']:.2f}x |"
        )


def _subprocess(args: argparse.Namespace, flag: str, case: dict) -> dict:
    """Run one case (``--case``) or pair (``--pair``) in a fresh process with its threads."""
    threads = str(case["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    command = [sys.executable, __file__, flag, json.dumps(case), "--device", args.device]
    command += ["--repeats", str(args.repeats), "--pair-repeats", str(args.pair_repeats)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
