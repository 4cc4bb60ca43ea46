"""The tiny presets end to end on generated scenes: the README's results table and the
papers' orderings.

Generates a VOC-layout tree (``--scenes synthetic``: the project's generator, 96x96, void band
3; ``shapes``: ``_shapes_voc``, 120x160 JPEG shapes, void band 3; ``texture``:
``_texture_voc``, 112x144 JPEG, 7 classes with thin bars on textured backgrounds, void band
4; ``lookalike``: ``_lookalike_voc``, 96x128 JPEG, look-alike objects told apart by their
surroundings, void band 3), then drives only the commands a user runs:

  deepcrf train fcn8s|deeplab|crfasrnn|joint --preset tiny --data-root DATA --out RUN
  deepcrf eval --model RUN --data-root DATA --split val [--crf] --trimap 1,3,5,10 --json ...

(crfasrnn from the fcn8s run, joint from the deeplab run, both with ``--set init=``).
Prints the wall and CPU time (user + sys) of each training with the machine's load average,
a table of val mIoU and trimap-band mIoU (FCN-8s, FCN-8s + CRF, CRF-as-RNN; DeepLab,
DeepLab + CRF, joint stage 2), and whether each of the papers' orderings holds.
``--systems fcn`` / ``deeplab`` train and score only one half.

Usage: python benchmarks/train_results.py --scenes shapes --out /tmp/results [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: trimap band widths, px (DeepLab: pixels within w of the void label)
BANDS = "1,3,5,10"


def _make_data(kind: str, out: Path, seed: int) -> Path:
    if (out / "VOCdevkit").is_dir():
        return out
    if kind in ("shapes", "texture", "lookalike"):
        sys.path.insert(0, str(HERE))
        module = __import__(f"_{kind}_voc")
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
    parser.add_argument(
        "--scenes", choices=("synthetic", "shapes", "texture", "lookalike"), default="shapes"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--systems",
        choices=("all", "deeplab", "fcn"),
        default="all",
        help="deeplab: only DeepLab, DeepLab + CRF and joint (the cheap half); fcn: only "
        "FCN-8s, FCN-8s + CRF and CRF-as-RNN",
    )
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
    if args.systems == "deeplab":
        plan = [p for p in plan if p[0] in ("deeplab", "joint")]
    elif args.systems == "fcn":
        plan = [p for p in plan if p[0] in ("fcn8s", "crfasrnn")]
    times = {}
    for recipe, extra in plan:
        if not (runs / recipe / "model.safetensors").is_file():
            load = os.getloadavg()[0]
            wall, cpu = _deepcrf("train", recipe, "--out", str(runs / recipe), *common, *extra,
                                 threads=args.threads)  # fmt: skip
            times[recipe] = (wall, cpu, load)
    rows = [
        ("FCN-8s", "fcn8s", False),
        ("FCN-8s + CRF (separate)", "fcn8s", True),
        ("CRF-as-RNN (end to end)", "crfasrnn", False),
        ("DeepLab-LargeFOV", "deeplab", False),
        ("DeepLab-LargeFOV + CRF (= joint stage 1 + CRF)", "deeplab", True),
        ("joint stage 2", "joint", False),
    ]
    if args.systems == "deeplab":
        rows = rows[3:]
    elif args.systems == "fcn":
        rows = rows[:3]
    results = {}
    for label, run, crf in rows:
        out = args.out / "eval" / f"{run}{'_crf' if crf else ''}.json"
        if not out.is_file():
            _deepcrf("eval", "--model", str(runs / run), "--data-root", str(data), "--split",
                     "val", "--trimap", BANDS, "--json", str(out), "--quiet",
                     *(["--crf"] if crf else []), threads=args.threads)  # fmt: skip
        results[label] = json.loads(out.read_text())
    print(f"scenes: {args.scenes}, seed {args.seed}; torch threads {args.threads}")
    for recipe, (wall, cpu, load) in times.items():
        print(
            f"train {recipe}: {wall:.0f} s wall, {cpu:.0f} s CPU (user + sys; load average "
            f"at start {load:.1f})"
        )
    print()
    widths = BANDS.split(",")
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
    """The papers' claims on these results: (claim with its numbers, whether it holds)."""

    labels = list(results)
    miou = {k: 100 * results[k]["miou"] for k in labels}
    claims = []
    fcn_rows = ("FCN-8s", "FCN-8s + CRF (separate)", "CRF-as-RNN (end to end)")
    if all(k in miou for k in fcn_rows):
        fcn, fcn_crf, rnn = (miou[k] for k in fcn_rows)
        claims += [
            (f"CRF-as-RNN {rnn:.2f} > FCN-8s + CRF {fcn_crf:.2f}", rnn > fcn_crf),
            (f"FCN-8s + CRF {fcn_crf:.2f} > FCN-8s {fcn:.2f}", fcn_crf > fcn),
        ]
    deeplab_rows = [k for k in labels if k.startswith("DeepLab") or k == "joint stage 2"]
    if len(deeplab_rows) != 3:
        return claims
    dl, dl_crf, joint = (miou[k] for k in deeplab_rows)
    tri = [results[k]["trimap"] for k in deeplab_rows[:2]]
    gains = [100 * (tri[1][w]["miou"] - tri[0][w]["miou"]) for w in widths]
    band = ", ".join(f"{w} px {g:+.2f}" for w, g in zip(widths, gains))
    return [
        (f"DeepLab + CRF {dl_crf:.2f} > DeepLab {dl:.2f}", dl_crf > dl),
        (f"CRF gain largest in the narrowest band ({band})", gains[0] >= max(gains)),
        *claims,
        (f"joint stage 2 {joint:.2f} > stage 1 + CRF {dl_crf:.2f}", joint > dl_crf),
    ]

if __name__ == "__main__":
    main()
