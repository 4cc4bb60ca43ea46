"""Ablation of the contextual deep CRF on generated context scenes (Lin et al. Tables 2-3).

Writes the project's synthetic scenes (road, water, grass, car, boat: car and boat share one
appearance, only the surrounding road or water tells them apart) as a VOC tree, trains
``deepcrf train contextual --preset tiny`` with each ablation switch, and evaluates every run
with ``deepcrf eval --model`` (without and with ``--crf``). Prints a table: val mIoU and the
IoU of car and boat, in %.

    PYTHONPATH=src python benchmarks/contextual_ablation.py --out /tmp/ctx_ablation [--steps N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from deepcrf.data import SyntheticScenes, write_voc_tree

VARIANTS = [
    (
        "unary only, no sliding pooling, 1 scale",
        [
            "model.relations=[]",
            "model.options.featmap_options.pyramid_windows=[]",
            "model.options.featmap_options.scales=[1.2]",
        ],
    ),
    (
        "unary only, + sliding pyramid, 1 scale",
        ["model.relations=[]", "model.options.featmap_options.scales=[1.2]"],
    ),
    ("unary only, + multi-scale (3 scales)", ["model.relations=[]"]),
    ("unary ensemble of 2 nets", ["model.relations=[]", "model.options.unary_nets=2"]),
    ("1 unary + CNN pairwise (full model)", []),
]


def run(cmd: list[str]) -> None:
    """Run a deepcrf command, failing loudly."""
    subprocess.run([sys.executable, "-m", "deepcrf", *cmd], check=True)


def evaluate(run_dir: Path, root: Path, crf: bool) -> dict:
    """``deepcrf eval --model`` of a run, its JSON result."""
    out = run_dir / ("eval_crf.json" if crf else "eval.json")
    if not out.is_file():
        run(
            [
                "eval",
                "--model",
                str(run_dir),
                "--data-root",
                str(root),
                "--split",
                "val",
                "--json",
                str(out),
                *(["--crf"] if crf else []),
            ]
        )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=None, help="train.steps (preset's default)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    root = args.out / "voc"
    if not (root / "VOCdevkit").is_dir():
        scenes = SyntheticScenes(
            args.scenes,
            size=(args.size, args.size),
            num_classes=5,
            seed=1,
            void_band=3,
            max_poles=0,
        )
        write_voc_tree(scenes, root, val_fraction=0.2)
    rows = []
    for i, (name, sets) in enumerate(VARIANTS):
        run_dir = args.out / f"run{i}"
        extra = [*sets, "train.progress=false"]
        if args.steps:
            extra.append(f"train.steps={args.steps}")
        if args.threads:
            extra.append(f"train.threads={args.threads}")
        if not (run_dir / "model.safetensors").is_file():
            cmd = [
                "train",
                "contextual",
                "--preset",
                "tiny",
                "--data-root",
                str(root),
                "--out",
                str(run_dir),
            ]
            for s in extra:
                cmd += ["--set", s]
            run(cmd)
        for crf in (False, True):
            r = evaluate(run_dir, root, crf)
            iou = list(r["iou"].values())  # road, water, grass, car, boat
            rows.append((name + (" + dense CRF" if crf else ""), r["miou"], iou[3], iou[4]))
    print("| method (tiny preset, generated scenes) | mIoU % | car IoU % | boat IoU % |")
    print("|---|---|---|---|")
    for name, miou, car, boat in rows:
        print(f"| {name} | {100 * miou:.1f} | {100 * (car or 0):.1f} | {100 * (boat or 0):.1f} |")


if __name__ == "__main__":
    main()
