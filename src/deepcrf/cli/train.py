"""``deepcrf train``: train one of the papers' systems (or a YAML config) into a run folder.

  deepcrf train RECIPE --data-root DIR --out RUN [--preset paper|tiny] [--set key=value ...]
                [--resume]
  deepcrf train --list

RECIPE is a recipe name (``deepcrf train --list``) or a YAML config file. ``--set`` takes
dotted keys with YAML values (``--set optim.lr=0.01 --set model.options.width=0.25``).
Under ``torchrun --nproc_per_node N deepcrf train ...`` the same command trains with N
processes (DistributedDataParallel). The run folder gets config.yaml, checkpoint.pt,
model.safetensors, log.jsonl and metrics.json.
"""

from __future__ import annotations

import argparse
import json
import sys


def run(args: argparse.Namespace) -> int:
    from ..recipes import list_recipes, main, resolve_config

    if args.list:
        print(list_recipes())
        return 0
    if args.recipe is None:
        raise ValueError("RECIPE: give a recipe name or a YAML file (see deepcrf train --list)")
    if args.out is None:
        raise ValueError("--out: the run folder to write is required")
    config = resolve_config(args.recipe, args.preset, args.set or [], args.data_root)
    if args.quiet:
        config.train.progress = False
    from ..recipes import TrainingError

    try:
        result = main(config, args.out, resume=args.resume)
    except TrainingError as exc:
        print(f"deepcrf train: error: {exc}", file=sys.stderr)
        return 1
    if result.get("stopped"):
        return 1
    shown = {k: v for k, v in result.items() if k != "iou"}
    print(json.dumps(shown))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train DeepLab, FCN-8s, CRF-as-RNN or joint CNN+CRF (recipes with presets)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", nargs="?", help="recipe name or YAML config file")
    p.add_argument("--list", action="store_true", help="list the recipes and their presets")
    p.add_argument("--data-root", default=None, help="dataset root folder (sets data.root)")
    p.add_argument("--out", default=None, help="run folder to write")
    p.add_argument("--preset", default=None, help="paper (default) or tiny")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value (repeat)"
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
