"""``deepcrf eval``: score predicted label maps against ground truth, with trimap curves.

Two forms:
  * folders: ``deepcrf eval --pred PRED_DIR --gt GT_DIR --num-classes K [--trimap ...]``;
  * a trained model: ``deepcrf eval --model RUN --data-root DIR --split val [--crf]
    [--crf-params FILE.json] [--trimap 1,3,10] --json OUT [--save-probs DIR]`` runs the model
    (a run folder or .safetensors file) on the split, with the dense CRF after it when asked
    (``--crf``: the CRF parameters the run carries; ``--crf-params``: a JSON of refine()
    keyword arguments). The JSON has the same keys in both forms.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepcrf.data.io import IMAGE_EXTENSIONS
from deepcrf.fileio import inside, same_file


def _widths(text: str) -> list[float]:
    try:
        widths = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths like 1,2,5, got {text!r}"
        ) from None
    if not widths or any(not (0 <= w < float("inf")) for w in widths):
        raise argparse.ArgumentTypeError(f"expected finite non-negative widths, got {text!r}")
    return widths


def _class_names(spec: str | None, num_classes: int) -> list[str] | None:
    """A dataset name (voc, cityscapes, ...), a file with one name a line, or "a,b,c"."""
    if spec is None:
        return None
    from ..data.classes import class_names

    if Path(spec).is_file():
        names = [ln.strip() for ln in Path(spec).read_text().splitlines() if ln.strip()]
    elif "," in spec:
        names = [s.strip() for s in spec.split(",")]
    else:
        names = list(class_names(spec))
    if len(names) != num_classes:
        raise ValueError(
            f"--classes: {spec!r} names {len(names)} classes, --num-classes is {num_classes}"
        )
    return names


def run_model(args: argparse.Namespace) -> int:
    """``deepcrf eval --model``: score a trained model on a dataset split."""
    from ..params import CRFParams
    from ..recipes import load_run
    from ..recipes.config import DataConfig
    from ..recipes.data import build_dataset
    from ..recipes.evaluate import evaluate_model

    if args.pred or args.gt:
        raise ValueError("--model: evaluates a model on --data-root; do not pass --pred/--gt")
    if args.data_root is None and args.dataset != "synthetic":
        raise ValueError("--data-root: the dataset to evaluate --model on is required")
    loaded = load_run(args.model, args.device)
    if args.json and same_file(args.json, loaded.weights):
        raise ValueError(f"--json: {args.json} is the --model weights file; write it elsewhere")
    if args.num_classes is not None and args.num_classes != loaded.num_classes:
        raise ValueError(
            f"--num-classes: {args.num_classes} but the model predicts {loaded.num_classes}"
        )
    crf = None
    if args.crf_params is not None:
        crf = CRFParams.load(args.crf_params)
    elif args.crf:
        crf = loaded.crf
    if crf is not None and loaded.has_own_crf:
        print("note: the model ends in its own trained CRF; it is not applied a second time")
    data = DataConfig(dataset=args.dataset, root=args.data_root, val_split=args.split or "val")
    split = args.split or "val"
    mode = loaded.model.config.get("normalize", "imagenet")
    dataset = build_dataset(data, split, loaded.num_classes, False, mode)
    result = evaluate_model(
        loaded,
        dataset,
        crf=crf,
        trimap=args.trimap or (),
        trimap_rule=args.trimap_rule,
        classes=_class_names(args.classes, loaded.num_classes),
        save_probs=args.save_probs,
        device=args.device,
        progress=not args.quiet,
    )
    result["model"] = str(args.model)
    result["crf"] = None if crf is None or loaded.has_own_crf else crf.to_dict()
    return _report(result, args)


#: files a dataset or a --pred / --gt folder may hold that eval (or a later run) reads
_DATA_SUFFIXES = {*IMAGE_EXTENSIONS, ".pgm", ".npy", ".txt"}


def _check_outputs_outside_inputs(args: argparse.Namespace) -> None:
    """``--json`` and ``--plot`` must not replace what eval reads: an existing image, label
    map, array or split list in the --pred / --gt folders or under --data-root (a label map
    there was overwritten by the report), or the --list / --classes / --crf-params file.
    New files and earlier reports in those folders are fine."""
    folders = [("--pred", args.pred), ("--gt", args.gt), ("--data-root", args.data_root)]
    files = [
        ("--list", args.list),
        ("--classes", args.classes),
        ("--crf-params", getattr(args, "crf_params", None)),
    ]
    for option in ("json", "plot"):
        out = getattr(args, option, None)
        if not out:
            continue
        data_file = Path(out).is_file() and Path(out).suffix.lower() in _DATA_SUFFIXES
        for name, folder in folders:
            if data_file and folder and Path(folder).is_dir() and inside(out, folder):
                raise ValueError(
                    f"--{option}: {out} is an input file in the {name} folder {folder}; "
                    "write the report elsewhere"
                )
        for name, path in files:
            if path and Path(path).is_file() and same_file(out, path):
                raise ValueError(f"--{option}: {out} is the {name} input; write it elsewhere")


def _report(result: dict, args: argparse.Namespace) -> int:
    from ..evaluation import format_table
    from ..fileio import atomic_write_text

    print(format_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if args.plot:
        from ..viz import plot_trimap

        name = Path(args.pred or args.model).name
        plot_trimap(result, args.plot, title=f"{name}: trimap")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data.lists import read_list
    from ..evaluation import evaluate_folders

    if args.plot:  # fail before the work, not after it
        if not args.trimap:
            raise ValueError("--plot: needs --trimap widths to draw")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot: needs matplotlib (pip install 'deepcrf[viz]')") from None

    _check_outputs_outside_inputs(args)
    if args.model is not None:
        return run_model(args)
    missing = [
        f
        for f, v in (("--pred", args.pred), ("--gt", args.gt), ("--num-classes", args.num_classes))
        if v is None
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)}: required to score folders (or use --model RUN)")
    names = None
    if args.list:  # names, or image/label pairs whose image stem is the name
        names = [r[0] if len(r) == 1 else Path(r[0]).stem for r in read_list(args.list)]
    result = evaluate_folders(
        args.pred,
        args.gt,
        args.num_classes,
        ignore_index=args.ignore_index,
        trimap=args.trimap or (),
        trimap_rule=args.trimap_rule,
        classes=_class_names(args.classes, args.num_classes),
        names=names,
        split=args.split,
        progress=not args.quiet,
        strict=args.strict,
        ignore_pred_void=args.ignore_pred_void,
    )
    return _report(result, args)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score predicted label maps (mIoU, accuracies, trimap)",
        description=__doc__.splitlines()[0].strip("`").split(": ", 1)[-1],
    )
    p.add_argument("--pred", default=None, help="folder of predicted index PNGs")
    p.add_argument(
        "--gt", default=None, help="folder of ground-truth index PNGs (or a VOC tree + --split)"
    )
    p.add_argument("--num-classes", type=int, default=None, help="number of classes K")
    p.add_argument("--ignore-index", type=int, default=255, help="void label (default 255)")
    p.add_argument("--trimap", type=_widths, default=None, help="band widths, e.g. 1,2,5,10,20,40")
    p.add_argument(
        "--trimap-rule",
        choices=("auto", "void", "boundary"),
        default="auto",
        help="distance to void pixels (DeepLab), to label boundaries, or auto (void if any)",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="voc, cityscapes, nyud, context, synthetic, a file of names or a comma-separated list",
    )
    p.add_argument("--list", default=None, help="evaluate only the names in this list file")
    p.add_argument(
        "--split", default=None, help="split name (VOC tree in --gt; --model: default val)"
    )
    m = p.add_argument_group("a trained model (--model)")
    m.add_argument("--model", default=None, help="run folder or .safetensors of deepcrf train")
    m.add_argument("--data-root", default=None, help="dataset root (as in deepcrf train)")
    m.add_argument(
        "--dataset",
        default="voc",
        choices=("voc", "cityscapes", "folder", "synthetic"),
        help="dataset layout of --data-root (default voc)",
    )
    m.add_argument("--crf", action="store_true", help="dense CRF with the run's parameters")
    m.add_argument(
        "--crf-params", default=None, help="JSON of refine() keyword arguments (implies --crf)"
    )
    m.add_argument("--save-probs", default=None, help="write softmax <stem>.npy files here")
    m.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="error (instead of a warning) when ground-truth maps have no prediction",
    )
    p.add_argument(
        "--ignore-pred-void",
        action="store_true",
        help="leave out pixels the prediction marks --ignore-index (uncertain pseudo-labels) "
        "and report their share",
    )
    p.add_argument("--json", default=None, help="write all numbers (fractions) to this file")
    p.add_argument("--plot", default=None, help="draw trimap curves to this PNG (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
