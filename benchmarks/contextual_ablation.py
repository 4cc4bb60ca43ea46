"""Ablation of the contextual deep CRF on generated context scenes (Lin et al. Tables 2-3).

Writes generated scenes as a VOC tree, in which two classes share one appearance and only the
surroundings tell them apart: ``--generator project`` (``deepcrf.data.SyntheticScenes``: road,
water, grass, car, boat; a vehicle is a car on road and a boat on water) or ``lookalike``
(``_lookalike_voc.py``: sand, snow, forest, sled, hut, ball; a purple hexagon or diamond is a
sled on snow and a hut on sand). Trains ``deepcrf train contextual --preset tiny`` with each
ablation switch, evaluates every run with ``deepcrf eval --model`` (without and with
``--crf``) and prints a table: val mIoU and the IoU of the two look-alike classes, in %.

    PYTHONPATH=src python benchmarks/contextual_ablation.py --out /tmp/ctx_ablation \\
        [--generator lookalike] [--seed 1] [--variants unary,pairwise] [--steps N]

Variants: ``plain`` (unary only, one scale, no sliding pyramid), ``pyramid`` (+ the sliding
pyramid), ``unary`` (+ three scales: the full FeatMap-Net, unary only), ``ensemble2`` (two
Unary-Nets, Table 2), ``pairwise`` (one Unary-Net + the CNN pairwise potentials: the full
model), ``refine`` (the second stage: the refinement network trained on the ``pairwise``
run, 200 steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from deepcrf.data import SyntheticScenes, write_voc_tree

VARIANTS = {
    "plain": (
        "unary only, 1 scale, no sliding pyramid",
        [
            "model.relations=[]",
            "model.options.featmap_options.pyramid_windows=[]",
            "model.options.featmap_options.scales=[1.2]",
        ],
    ),
    "pyramid": (
        "unary only, + sliding pyramid, 1 scale",
        ["model.relations=[]", "model.options.featmap_options.scales=[1.2]"],
    ),
    "unary": ("unary only, + multi-scale (3 scales)", ["model.relations=[]"]),
    "ensemble2": ("unary ensemble of 2 nets", ["model.relations=[]", "model.options.unary_nets=2"]),
    "pairwise": ("1 unary + CNN pairwise (full model)", []),
    "refine": ("1 unary + CNN pairwise + refinement network", ["model.options.refine_net=true"]),
}
#: The two look-alike classes of each generator (indices into its classes).
LOOKALIKE = {"project": (3, 4), "lookalike": (3, 4)}


def run(cmd: list[str]) -> None:
    """Run a deepcrf command, failing loudly."""
    subprocess.run([sys.executable, "-m", "deepcrf", *cmd], check=True)


def evaluate(run_dir: Path, root: Path, crf: bool) -> dict:
    """``deepcrf eval --model`` of a run, its JSON result."""
    out = run_dir / ("eval_crf.json" if crf else "eval.json")
    if not out.is_file():
        cmd = ["eval", "--model", str(run_dir), "--data-root", str(root), "--split", "val"]
        run([*cmd, "--json", str(out), *(["--crf"] if crf else [])])
    return json.loads(out.read_text())


def write_scenes(generator: str, root: Path, seed: int, scenes: int, size: int) -> None:
    """The generator's VOC tree under ``root`` (20 % of the scenes in val)."""
    if generator == "project":
        data = SyntheticScenes(
            scenes, size=(size, size), num_classes=5, seed=seed, void_band=3, max_poles=0
        )
        write_voc_tree(data, root, val_fraction=0.2)
    else:
        from _lookalike_voc import write_tree

        write_tree(root, n=scenes, val=round(0.2 * scenes), seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generator", choices=sorted(LOOKALIKE), default="project")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--size", type=int, default=112, help="project scenes' side (px)")
    parser.add_argument("--variants", default="plain,pyramid,unary,ensemble2,pairwise,refine")
    parser.add_argument("--steps", type=int, default=None, help="train.steps (preset's default)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    root = args.out / "voc"
    if not (root / "VOCdevkit").is_dir():
        write_scenes(args.generator, root, args.seed, args.scenes, args.size)
    rows = []
    for key in names:
        name, sets = VARIANTS[key]
        run_dir = args.out / key
        extra = [*sets, "train.progress=false"]
        if key == "refine":
            if not (args.out / "pairwise" / "model.safetensors").is_file():
                raise SystemExit("--variants: refine needs the pairwise run first")
            extra += [f"init={args.out / 'pairwise'}", "train.steps=200"]  # the README's
        if args.steps:
            extra.append(f"train.steps={args.steps}")
        if args.threads:
            extra.append(f"train.threads={args.threads}")
        if not (run_dir / "model.safetensors").is_file():
            cmd = ["train", "contextual", "--preset", "tiny", "--data-root", str(root)]
            cmd += ["--out", str(run_dir)]
            for s in extra:
                cmd += ["--set", s]
            run(cmd)
        a, b = LOOKALIKE[args.generator]
        for crf in (False, True):
            r = evaluate(run_dir, root, crf)
            iou = list(r["iou"].values())
            rows.append((name + (" + dense CRF" if crf else ""), r["miou"], iou[a], iou[b]))
    print(f"| method (tiny preset, {args.generator} scenes, seed {args.seed}) | mIoU % "
          f"| look-alike class A IoU % | class B IoU % |")  # fmt: skip
    print("|---|---|---|---|")
    for name, miou, x, y in rows:
        print(f"| {name} | {100 * miou:.1f} | {100 * (x or 0):.1f} | {100 * (y or 0):.1f} |")


if __name__ == "__main__":
    main()
