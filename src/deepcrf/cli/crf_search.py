"""``deepcrf crf-search``: choose the dense CRF's parameters for your network and data.

The CRF only helps with parameters that suit the network and the data. This command
computes (or reads) the network's probabilities once and scores refine() parameter points by
the mIoU of the refined predictions on validation images:

  deepcrf crf-search --images val/img --probs val/probs --labels val/gt --out search.json
  deepcrf crf-search --model runs/deeplab --data-root data/VOCdevkit --split val --out search.json
  deepcrf refine photo.jpg --probs p.npy --crf-params search.json --out refined.png

``--method grid`` (default) runs DeepLab's coarse-to-fine cross-validation (w2 = 3, σγ = 3,
10 iterations; w1 ∈ {3,4,5,6,8,10}, σα ∈ 40:10:120, σβ ∈ 3:1:10, then a finer grid around
the best point) or the grid of ``--grid FILE`` (JSON/YAML of value lists per refine()
parameter). ``--method fit`` fits the parameters by gradient descent instead.

Finished points are appended to ``<out stem>.results.jsonl`` next to ``--out``: a killed
search resumes from it; the result does not depend on ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from deepcrf.fileio import same_file
from deepcrf.parallel import available_cpus
from deepcrf.search.samples import folder_samples

#: How the --model form gets its probabilities: (args, cache folder) -> list of SampleFiles.
ProbabilitySource = Callable[[argparse.Namespace, Path], list]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crf-search",
        help="choose the dense CRF's parameters on validation images (grid search or fit)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("images (a deepcrf model, or folders paired by file stem)")
    src.add_argument("--model", type=Path, help="trained deepcrf run folder")
    src.add_argument("--data-root", type=Path, help="dataset root for --model")
    src.add_argument("--split", default="val", help="dataset split for --model (default: val)")
    src.add_argument(
        "--dataset",
        default="voc",
        help="layout of --data-root for --model: voc, cityscapes, folder, synthetic",
    )
    src.add_argument("--device", default="cpu", help="torch device that runs --model")
    src.add_argument("--images", type=Path, help="folder of photos")
    src.add_argument("--probs", type=Path, help="folder of .npy (L, H, W) probabilities")
    src.add_argument("--labels", type=Path, help="folder of ground-truth label PNGs")
    p.add_argument(
        "--num-images", type=int, default=100, help="search on the first N images (default 100)"
    )
    p.add_argument("--method", choices=("grid", "fit"), default="grid", help="default: grid")
    p.add_argument(
        "--grid",
        default="coarse-to-fine",
        help="'coarse-to-fine' (DeepLab's protocol, default) or a JSON/YAML file of value lists",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"worker processes (default: the CPUs available, here {available_cpus()})",
    )
    p.add_argument("--out", type=Path, required=True, help="output JSON (best, baseline, results)")
    p.add_argument("--plot", type=Path, help="heatmap PNG of mIoU over (σα, σβ) at the best w1")
    p.add_argument("--ignore-index", type=int, default=255, help="void label (default 255)")
    p.add_argument("--top", type=int, default=10, help="rows of the printed table (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    fit = p.add_argument_group("--method fit")
    fit.add_argument("--fit-steps", type=int, default=40, help="gradient steps (default 40)")
    fit.add_argument(
        "--fit-lr", type=float, default=0.05, help="Adam's relative step size (default 0.05)"
    )
    fit.add_argument("--fit-batch", type=int, default=4, help="images per step (default 4)")
    fit.add_argument(
        "--fit-loss",
        choices=("iou", "ce"),
        default="iou",
        help="soft Jaccard (default) or cross-entropy of the marginals",
    )
    fit.add_argument(
        "--fit-per-axis",
        action="store_true",
        help="one bandwidth per axis and colour channel (default: σα, σβ, σγ as DeepLab)",
    )
    fit.add_argument(
        "--fit-per-class-weights", action="store_true", help="one kernel weight per class"
    )
    fit.add_argument("--fit-compat", action="store_true", help="learn a full compatibility matrix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deepcrf.search import take_first

    _check_args(args)
    grid = _grid_arg(args) if args.method == "grid" else None  # a bad grid fails first
    args.out.parent.mkdir(parents=True, exist_ok=True)
    samples = take_first(_samples(args), args.num_images)
    progress = None if args.quiet else _tqdm_factory()
    if args.method == "grid":
        result = _grid(args, grid, samples, progress)
    else:
        result = _fit(args, samples, progress)
    from deepcrf.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(format_table(result, args.top))
    print(f"wrote {args.out} (use it as --crf-params of deepcrf refine / eval / predict)")
    if args.plot is not None:
        plot_heatmap(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _check_args(args: argparse.Namespace) -> None:
    folders = [args.images, args.probs, args.labels]
    if args.model is not None:
        if any(f is not None for f in folders):
            raise ValueError("--model: use either --model or --images/--probs/--labels, not both")
        if args.data_root is None and args.dataset != "synthetic":
            raise ValueError("--data-root: required with --model")
    elif any(f is None for f in folders):
        raise ValueError("--images, --probs and --labels are all required (or --model RUN)")
    if args.jobs is None:
        args.jobs = available_cpus()
    if args.jobs < 1:
        raise ValueError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    if args.plot is not None and args.method == "fit":
        raise ValueError("--plot: draws a grid search's mIoU over (σα, σβ); not with --method fit")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot: needs matplotlib (pip install 'deepcrf[viz]')") from None
    if args.out.exists() and args.out.is_dir():
        raise ValueError(f"--out: {args.out} is a folder; expected a .json file path")
    if args.grid is not None and Path(args.grid).is_file() and same_file(args.out, args.grid):
        raise ValueError(f"--out: {args.out} is the --grid input; write the result elsewhere")


def _samples(args: argparse.Namespace) -> list:
    if args.model is None:
        return folder_samples(args.images, args.probs, args.labels)
    cache = args.out.with_name(args.out.stem + ".probs")
    return model_probabilities(args, cache)


def _model_source(args: argparse.Namespace, cache: Path) -> list:
    """The --model form: the model's probabilities on the first ``--num-images`` images of
    the split, computed once into ``cache`` (photos, .npy, label PNGs; a resumed search
    reuses the files already there), then read like the folder form."""
    try:
        from deepcrf.recipes.config import DataConfig
        from deepcrf.recipes.data import build_dataset
        from deepcrf.recipes.predict import iterate_dataset, load_run, model_probabilities
    except ImportError:
        raise ValueError(
            "--model: this installation cannot run deepcrf models yet; save the model's "
            "probabilities (.npy) and use --images/--probs/--labels"
        ) from None
    import numpy as np
    from PIL import Image

    from deepcrf.fileio import atomic_write, remove_stale_temps
    from deepcrf.viz import save_label_png

    loaded = load_run(args.model, args.device)
    data = DataConfig(
        dataset=args.dataset,
        root=str(args.data_root) if args.data_root is not None else None,
        val_split=args.split,
    )
    mode = loaded.model.config.get("normalize", "imagenet")
    dataset = build_dataset(data, args.split, loaded.num_classes, False, mode)
    count = min(len(dataset), args.num_images or len(dataset))
    folders = {k: cache / k for k in ("images", "probs", "labels")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
    done = {p.stem for p in folders["probs"].glob("*.npy")}
    todo = [i for i in range(count) if _item_name(dataset, i) not in done]
    items = iterate_dataset(dataset, todo)
    if not args.quiet and todo:
        from tqdm import tqdm

        items = tqdm(items, total=len(todo), desc="crf-search probabilities", unit="img")
    for name, raw, label in items:
        if label is None:
            raise ValueError(f"--split {args.split}: image {name} has no ground-truth labels")
        probs = model_probabilities(loaded.model, raw)
        atomic_write(folders["images"] / f"{name}.png", lambda t, r=raw: Image.fromarray(r).save(t))
        lab = np.asarray(label).astype(np.uint8)
        atomic_write(folders["labels"] / f"{name}.png", lambda t, x=lab: save_label_png(t, x))
        atomic_write(folders["probs"] / f"{name}.npy", lambda t, q=probs: np.save(t, q))
    samples = folder_samples(folders["images"], folders["probs"], folders["labels"])
    wanted = [_item_name(dataset, i) for i in range(count)]
    by_name = {s.name: s for s in samples}
    return [by_name[n] for n in wanted]


def _item_name(dataset, index: int) -> str:
    """The name of item ``index`` without loading it where the dataset can tell."""
    names = getattr(dataset, "names", None)
    if isinstance(names, list):
        return str(names[index])
    if callable(getattr(dataset, "name", None)):
        return str(dataset.name(index))
    return str(dataset[index]["name"])


model_probabilities: ProbabilitySource = _model_source


def _grid_arg(args: argparse.Namespace):
    from deepcrf.search import COARSE_TO_FINE, load_grid

    return COARSE_TO_FINE if args.grid == COARSE_TO_FINE else load_grid(args.grid)


def _grid(args: argparse.Namespace, grid, samples: list, progress) -> dict:
    from deepcrf.search import grid_search

    result = grid_search(
        samples,
        grid,
        jobs=args.jobs,
        results_file=args.out.with_name(args.out.stem + ".results.jsonl"),
        ignore_index=args.ignore_index,
        progress=progress,
    )
    return result.to_json()


def _fit(args: argparse.Namespace, samples: list, progress) -> dict:
    from deepcrf.search.fit import fit

    fitted = fit(
        samples,
        steps=args.fit_steps,
        lr=args.fit_lr,
        batch=args.fit_batch,
        loss=args.fit_loss,
        per_axis=args.fit_per_axis,
        per_class_weights=args.fit_per_class_weights,
        learn_compat=args.fit_compat,
        ignore_index=args.ignore_index,
        jobs=args.jobs,
        results_file=args.out.with_name(args.out.stem + ".results.jsonl"),
        progress=progress,
    )
    return {
        "best": fitted.params,
        "baseline": fitted.baseline,
        "method": "fit",
        "num_images": len(samples),
        "images": [s.name for s in samples],
        "best_miou": fitted.miou,
        "best_pixel_acc": fitted.pixel_acc,
        "start": {"preset": fitted.start_name, "params": fitted.start},
        "losses": fitted.losses,
        "results": [
            {
                "params": c["params"],
                "miou": c["miou"],
                "pixel_acc": c["pixel_acc"],
                "stage": _fit_stage(c["step"]),
            }
            for c in fitted.checkpoints
        ],
    }


def _fit_stage(step) -> str:
    return f"step {step}" if isinstance(step, int) else f"weights {step}"


def _tqdm_factory():
    from tqdm import tqdm

    def make(stage: str, total: int):
        return tqdm(total=total, desc=f"crf-search {stage}", unit="pt", file=sys.stderr)

    return make


def _short(value) -> str:
    if isinstance(value, list):
        flat = json.dumps(value)
        return flat if len(flat) <= 14 else "[...]"
    return f"{value:g}"


def format_table(result: dict, top: int = 10) -> str:
    """The best points (mIoU and pixel accuracy in %) and the baselines, as text."""
    from deepcrf.params import DEEPLAB_NAMES

    names = [
        "bilateral_compat",
        "bilateral_sxy",
        "bilateral_srgb",
        "gaussian_compat",
        "gaussian_sxy",
        "iterations",
    ]
    heads = [DEEPLAB_NAMES.get(n, "iters") for n in names]
    rows = sorted(result["results"], key=lambda r: -(r["miou"] or 0.0))[: max(0, top)]
    width = 9
    lines = [
        f"{result['method']} search on {result['num_images']} images: "
        f"best mIoU {100 * result['best_miou']:.2f}%  "
        f"(no CRF {100 * result['baseline']['no_crf']:.2f}%, "
        f"default parameters {100 * result['baseline']['default']:.2f}%)",
        "  ".join(h.rjust(width) for h in [*heads, "mIoU %", "pix.acc %"]) + "  stage",
    ]
    for r in rows:
        cells = [_short(r["params"][n]) for n in names]
        cells += [f"{100 * r['miou']:.2f}", f"{100 * r['pixel_acc']:.2f}"]
        mark = "  <- best" if r["params"] == result["best"] else ""
        lines.append("  ".join(c.rjust(width) for c in cells) + f"  {r['stage']}{mark}")
    lines.append("best (--crf-params): " + json.dumps(result["best"]))
    return "\n".join(lines)


def plot_heatmap(result: dict, path: Path) -> Path:
    """mIoU over (σα, σβ) at the w1 (and other values) of the best point; when the best w1
    was only searched on a few points, at the searched w1 with the most points."""
    import math

    from deepcrf.viz import plot_search_heatmap

    best = result["best"]
    fixed = [n for n in best if n not in ("bilateral_sxy", "bilateral_srgb", "bilateral_compat")]
    rows = [
        r
        for r in result["results"]
        if all(r["params"][n] == best[n] for n in fixed)
        and not isinstance(r["params"]["bilateral_sxy"], list)
        and not isinstance(r["params"]["bilateral_srgb"], list)
    ]
    by_w1: dict = {}
    for r in rows:
        by_w1.setdefault(json.dumps(r["params"]["bilateral_compat"]), []).append(r)
    if not by_w1:
        raise ValueError("--plot: no grid points with scalar σα, σβ to draw")
    best_w1 = json.dumps(best["bilateral_compat"])
    chosen = (
        best_w1
        if len(by_w1.get(best_w1, [])) >= 4
        else max(by_w1, key=lambda w: (len(by_w1[w]), w == best_w1))
    )
    points = by_w1[chosen]
    sxy = sorted({r["params"]["bilateral_sxy"] for r in points})
    srgb = sorted({r["params"]["bilateral_srgb"] for r in points})
    grid = [[math.nan] * len(srgb) for _ in sxy]
    for r in points:
        grid[sxy.index(r["params"]["bilateral_sxy"])][srgb.index(r["params"]["bilateral_srgb"])] = (
            r["miou"]
        )
    title = f"crf-search: mIoU at w1 = {json.loads(chosen)}"
    return plot_search_heatmap(
        grid,
        sxy,
        srgb,
        path,
        title=title,
        best=(best["bilateral_sxy"], best["bilateral_srgb"]),
    )
