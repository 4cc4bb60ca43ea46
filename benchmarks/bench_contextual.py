"""Contextual deep CRF cost: potentials + 3 mean-field iterations on a 35 x 35 map.

Paper setting (Lin et al. §8.1): ~1,200 nodes, 2 pairwise types ("surrounding",
"above_below") with 24 sampled neighbours each, K = 21, Unary-Net / Pairwise-Net of Fig. 8
(FC 512 -> FC K / K^2) on feature maps of --channels features (4608 in the paper). Every row
is timed (median of --repeats, taken round robin over the rows, no autograd) and its peak
memory measured in the same run;
times are reported as ratios to the unary-only forward, the reference row, because the
machines are shared (absolute times are printed only on a GPU).

    PYTHONPATH=src python benchmarks/bench_contextual.py [--channels 4608] [--device cuda]
    PYTHONPATH=src python benchmarks/bench_contextual.py --featmap-width 1.0 --device cuda

``--train-step`` instead times one asynchronous training step (the tiny preset's networks,
96 px crops, batch 4) against the unary-only step.

With --featmap-width the zoo's FeatMap-Net (at that width) also runs on an image whose map is
35 x 35, in a row of its own and in the full pipeline row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from _memory import rss_kib
from deepcrf.contextual import mean_field, pairwise_scores, range_box_edges


def seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(
    fns: list[Callable[[], object]], device: torch.device, repeats: int
) -> list[float]:
    """Median wall time of each of ``fns`` (one warm-up call each), the repeats taken round
    robin over the rows, so that a change of the machine's load affects every row alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in tqdm(range(repeats), desc="rounds", leave=False):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call of ``fn`` above what was allocated before it, in MiB.

    On the CPU this is the peak resident set size; it is exact only when glibc returns freed
    blocks at once (MALLOC_MMAP_THRESHOLD_ set, see ``cpu_memory_column``).
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        base, _ = rss_kib()
        fn()
        peak = (rss_kib()[1] - base) / 1024
    return peak


def cpu_memory_column() -> list[float]:
    """Peak MiB of every row, measured by a copy of this script with glibc's mmap threshold at
    64 KiB: every tensor is then its own mapping, unmapped when freed, so the peak RSS counts
    live tensors only (timings are taken here, with the normal allocator)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, __file__, *sys.argv[1:], "--memory-only"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=35, help="feature map side (nodes)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--channels", type=int, default=4608, help="feature dimension C")
    parser.add_argument("--hidden", type=int, default=512, help="Unary/Pairwise-Net hidden FC")
    parser.add_argument("--chunk", type=int, default=8192, help="edges per Pairwise-Net call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--featmap-width", type=float, default=None)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    s, k, c, hid = args.size, args.classes, args.channels, args.hidden

    from deepcrf.models.featmap import PairwiseNet, UnaryNet

    width = hid / 512
    unary_net = UnaryNet(k, c, width).to(device).eval()
    pairwise_nets = [PairwiseNet(k, 2 * c, width).to(device).eval() for _ in range(2)]
    nodes = [torch.randn(s * s, c, device=device) for _ in range(3)]
    edges = [range_box_edges(s, s, r).to(device) for r in ("surrounding", "above_below")]

    def unary_only():
        return unary_net(nodes[0]).softmax(1)

    def potentials(chunk: int, split: bool = True):
        unary = unary_net(nodes[0])
        tables = [
            pairwise_scores(f, e, net, k, chunk, split=split)
            for f, e, net in zip(nodes[1:], edges, pairwise_nets, strict=True)
        ]
        return unary, tables

    fixed = potentials(args.chunk)

    def inference():
        return mean_field(fixed[0], edges, fixed[1], iterations=3)

    def pipeline(chunk: int, split: bool = True):
        unary, tables = potentials(chunk, split)
        return mean_field(unary, edges, tables, iterations=3)

    rows: list[tuple[str, Callable[[], object]]] = [
        ("unary-only forward (reference)", unary_only),
        (f"before: potentials, unsplit, chunk {args.chunk}", lambda: potentials(args.chunk, False)),
        ("before: potentials + 3 MF, unsplit", lambda: pipeline(args.chunk, False)),
        (f"potentials, split, chunk {args.chunk}", lambda: potentials(args.chunk)),
        ("3 mean-field iterations", inference),
        (f"potentials + 3 MF, split, chunk {args.chunk}", lambda: pipeline(args.chunk)),
        ("potentials + 3 MF, split, one chunk", lambda: pipeline(max(e.shape[0] for e in edges))),
    ]
    if args.featmap_width is not None:
        from deepcrf.models import build

        featmap = build("featmap_net", width=args.featmap_width).to(device).eval()
        side = round(s * 16 / 1.2)  # ceil(round(1.2 H) / 16) == s
        image = torch.randn(1, 3, side, side, device=device)
        if featmap(image).shape[-2:] != (s, s):
            raise SystemExit(f"image side {side} does not give a {s} x {s} map")
        rows.append((f"FeatMap-Net width {args.featmap_width}, {side}px", lambda: featmap(image)))
        rows.append(
            ("FeatMap-Net + potentials + 3 MF", lambda: (featmap(image), pipeline(args.chunk)))
        )

    with torch.no_grad():
        if args.memory_only:
            print(json.dumps([peak_mib(fn, device) for _, fn in rows]))
            return
        times = interleaved_seconds([fn for _, fn in rows], device, args.repeats)
        if device.type == "cpu":
            memory = cpu_memory_column()
        else:
            memory = [peak_mib(fn, device) for _, fn in rows]
    results = [(name, t, m) for (name, _), t, m in zip(rows, times, memory, strict=True)]
    ref = results[0][1]
    n_edges = sum(e.shape[0] for e in edges)
    print(
        f"{s}x{s} map, {s * s} nodes, {n_edges} edges in 2 relations, K={k}, C={c}, "
        f"hidden {hid}, device {device}, torch threads {torch.get_num_threads()}"
    )
    gpu = device.type == "cuda"
    columns = [f"{'case':<44}", f"{'time / ref':>10}"] + ([f"{'time (s)':>9}"] if gpu else [])
    columns.append(f"{'peak extra MiB':>14}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")
    for name, t, mem in results:
        cells = [f"{name:<44}", f"{t / ref:>10.1f}"] + ([f"{t:>9.4f}"] if gpu else [])
        print("| " + " | ".join([*cells, f"{mem:>14.1f}"]) + " |")
    before, after = results[2][1], results[5][1]
    print(
        f"potentials + 3 mean-field iterations, chunk {args.chunk}: {before / after:.1f}x faster "
        f"than before (unsplit), peak memory {results[2][2]:.0f} -> {results[5][2]:.0f} MiB"
    )


def train_step_table(crop: int, batch: int, repeats: int) -> None:
    """Time of one asynchronous training step of the tiny preset's contextual CRF against the
    unary-only model's step (same FeatMap-Nets, crop and batch), both on the CPU."""
    from deepcrf.contextual import asynchronous_step
    from deepcrf.models import build
    from deepcrf.recipes import resolve_config
    from deepcrf.recipes.contextual import build_contextual_optimizer

    tiny = resolve_config("contextual", "tiny")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, crop, crop)
    y = torch.randint(0, 5, (batch, crop, crop))
    rows = []
    for name, relations in (("unary only (reference)", []), ("unary + 2 Pairwise-Nets", None)):
        model = build("contextual_crf", 5, **{**tiny.model.options, "relations": relations})
        opt = build_contextual_optimizer(model, tiny.optim)

        def step(model=model, opt=opt):
            return asynchronous_step(
                model, x, y, opt.main, opt.pairwise, tiny.optim.edges_per_update
            )

        rows.append((name, seconds(step, torch.device("cpu"), repeats)))
    print(f"training step: tiny preset, {crop} px crops, batch {batch}, 5 classes, CPU")
    print(f"| {'case':<30} | time / ref |")
    print(f"|{'-' * 32}|------------|")
    for name, t in rows:
        print(f"| {name:<30} | {t / rows[0][1]:>10.2f} |")


if __name__ == "__main__":
    if "--train-step" in sys.argv:
        train_step_table(crop=96, batch=4, repeats=3)
    else:
        main()
