"""The tiny presets end to end on generated scenes: the README's results table and the
papers' orderings.

Generates a VOC-layout tree (``--scenes synthetic``: the project's generator, 96x96, void band
3; ``shapes``: ``_shapes_voc``, 120x160 JPEG shapes, void band 3; ``texture``:
``_texture_voc``, 112x144 JPEG, 7 classes with thin bars on textured backgrounds, void band
4; ``lookalike``: ``_lookalike_voc``, 96x128 JPEG, stuff regions and look-alike objects told
apart by their surroundings, void band 3), then drives only the commands a user runs:

  deepcrf train fcn8s|deeplab|crfasrnn|joint --preset tiny --data-root DATA --out RUN
  deepcrf eval --model RUN --data-root DATA --split val [--crf] --trimap BANDS --json ...

(crfasrnn from the fcn8s run, joint from the deeplab run, both with ``--set init=``).
Prints the wall and CPU time (user + sys) of each training with the machine's load average,
a table of val mIoU and trimap-band mIoU (FCN-8s, FCN-8s + CRF, CRF-as-RNN; DeepLab,
DeepLab + CRF, joint stage 2), and whether each of the papers' orderings holds.

Usage: python benchmarks/train_results.py --scenes shapes --out /tmp/results [--seed 0]
       [--systems all|deeplab|fcn] [--bands 1,3,5,10,20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from deepcrf.evaluation import width_key

HERE = Path(__file__).resolve().parent
#: trimap band widths, px (DeepLab: pixels within w of the void label)
BANDS = "1,3,5,10,20"
#: generator module of each benchmark scene kind (the project's own is ``synthetic``)
#: (table label, run, with --crf): FCN-8s half, then DeepLab half
ROWS = (
    ("FCN-8s", "fcn8s", False),
    ("FCN-8s + CRF (separate)", "fcn8s", True),
    ("CRF-as-RNN (end to end)", "crfasrnn", False),
    ("DeepLab-LargeFOV", "deeplab", False),
    ("DeepLab-LargeFOV + CRF (= joint stage 1 + CRF)", "deeplab", True),
    ("joint stage 2", "joint", False),
)
GENERATORS = {"shapes": "_shapes_voc", "texture": "_texture_voc", "lookalike": "_lookalike_voc"}


def _make_data(kind: str, out: Path, seed: int) -> Path:
    if (out / "VOCdevkit").is_dir():
        return out
    if kind in GENERATORS:
        sys.path.insert(0, str(HERE))
        module = __import__(GENERATORS[kind])
        module.write_tree(out, n=150, val=40, seed=seed)
    else:
        from deepcrf.data import SyntheticScenes, write_voc_tree

        scenes = SyntheticScenes(150, size=(96, 96), seed=seed, void_band=3)
        write_voc_tree(scenes, out, val_fraction=40 / 150)
    return out


def _deepcrf(*args: str, threads: int) -> tuple[float, float]:
    """Run ``python -m deepcrf ARGS``: (wall seconds, CPU seconds user + sys)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepcrf", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", choices=("synthetic", *GENERATORS), default="shapes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--systems",
        choices=("all", "deeplab", "fcn"),
        default="all",
        help="deeplab: only DeepLab, DeepLab + CRF and joint; fcn: only FCN-8s, FCN-8s + CRF "
        "and CRF-as-RNN",
    )
    parser.add_argument("--bands", default=BANDS, help="trimap band widths, px (comma list)")
    args = parser.parse_args()
    data = _make_data(args.scenes, args.out / "data", args.seed)
    runs = args.out / "runs"
    common = ["--preset", "tiny", "--data-root", str(data), "--quiet",
              "--set", f"train.threads={args.threads}"]  # fmt: skip
    plan = [
        ("fcn8s", []),
        ("deeplab", []),
        ("crfasrnn", ["--set", f"init={runs / 'fcn8s'}"]),
        # joint's stage 1 is the deeplab run (without init= it trains the same run itself)
        ("joint", ["--set", f"init={runs / 'deeplab'}"]),
    ]
    half = {"deeplab": ("deeplab", "joint"), "fcn": ("fcn8s", "crfasrnn")}.get(args.systems)
    if half is not None:
        plan = [p for p in plan if p[0] in half]
    times = {}
    for recipe, extra in plan:
        if not (runs / recipe / "model.safetensors").is_file():
            load = os.getloadavg()[0]
            wall, cpu = _deepcrf("train", recipe, "--out", str(runs / recipe), *common, *extra,
                                 threads=args.threads)  # fmt: skip
            times[recipe] = (wall, cpu, load)
    rows = ROWS if half is None else [r for r in ROWS if r[1] in half]
    results = {}
    for label, run, crf in rows:
        out = args.out / "eval" / f"{run}{'_crf' if crf else ''}.json"
        if not out.is_file():
            _deepcrf("eval", "--model", str(runs / run), "--data-root", str(data), "--split",
                     "val", "--trimap", args.bands, "--json", str(out), "--quiet",
                     *(["--crf"] if crf else []), threads=args.threads)  # fmt: skip
        results[label] = json.loads(out.read_text())
    print(f"scenes: {args.scenes}, seed {args.seed}; torch threads {args.threads}")
    for recipe, (wall, cpu, load) in times.items():
        print(
            f"train {recipe}: {wall:.0f} s wall, {cpu:.0f} s CPU (user + sys; load average "
            f"at start {load:.1f})"
        )
    print()
    widths = [width_key(float(w)) for w in args.bands.split(",")]
    print("| system | val mIoU % | " + " | ".join(f"trimap {w} px" for w in widths) + " |")
    print("|---|---|" + "---|" * len(widths))
    for label, result in results.items():
        tri = result["trimap"]
        print(f"| {label} | {100 * result['miou']:.2f} | "
              + " | ".join(f"{100 * tri[w]['miou']:.2f}" for w in widths) + " |")  # fmt: skip
    print()
    for claim, holds in orderings(results, widths):
        print(f"{'holds' if holds else 'FAILS'}: {claim}")


def orderings(results: dict, widths: list[str]) -> list[tuple[str, bool]]:
    """The papers' claims on these results: (claim with its numbers, whether it holds).

    DeepLab's trimap claim is read strictly: the CRF's gain is largest in the narrowest band
    and shrinks (never grows) from each band to the next wider one."""

    miou = {k: 100 * v["miou"] for k, v in results.items()}
    claims = []
    fcn, fcn_crf, rnn = (miou.get(r[0]) for r in ROWS[:3])
    if rnn is not None and fcn_crf is not None:
        claims.append((f"CRF-as-RNN {rnn:.2f} > FCN-8s + CRF {fcn_crf:.2f}", rnn > fcn_crf))
    if fcn is not None and fcn_crf is not None:
        claims.append((f"FCN-8s + CRF {fcn_crf:.2f} > FCN-8s {fcn:.2f}", fcn_crf > fcn))
    dl, dl_crf, joint = (miou.get(r[0]) for r in ROWS[3:])
    if dl is None or dl_crf is None:
        return claims
    tri = [results[r[0]]["trimap"] for r in ROWS[3:5]]
    gains = [100 * (tri[1][w]["miou"] - tri[0][w]["miou"]) for w in widths]
    band = ", ".join(f"{w} px {g:+.2f}" for w, g in zip(widths, gains))
    shrinking = all(a >= b for a, b in itertools.pairwise(gains))
    claims += [
        (f"DeepLab + CRF {dl_crf:.2f} > DeepLab {dl:.2f}", dl_crf > dl),
        (f"CRF gain largest in the narrowest band ({band})", gains[0] >= max(gains)),
        ("CRF gain shrinks with every wider band", shrinking),
    ]
    if joint is not None:
        claims.append((f"joint stage 2 {joint:.2f} > stage 1 + CRF {dl_crf:.2f}", joint > dl_crf))
    return claims


if __name__ == "__main__":
    main()
