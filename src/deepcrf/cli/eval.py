"""``deepcrf eval``: score predicted label maps against ground truth, with trimap curves."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def run(args: argparse.Namespace) -> int:
    from ..data.lists import read_list
    from ..evaluation import evaluate_folders, format_table

    if args.plot:  # fail before the work, not after it
        if not args.trimap:
            raise ValueError("--plot: needs --trimap widths to draw")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--plot: needs matplotlib (pip install 'deepcrf[viz]')") from None

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
    )
    print(format_table(result))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        from ..viz import plot_trimap

        plot_trimap(result, args.plot, title=f"{Path(args.pred).name}: trimap")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score predicted label maps (mIoU, accuracies, trimap)",
        description=__doc__.splitlines()[0].strip("`").split(": ", 1)[-1],
    )
    p.add_argument("--pred", required=True, help="folder of predicted index PNGs")
    p.add_argument(
        "--gt", required=True, help="folder of ground-truth index PNGs (or a VOC tree + --split)"
    )
    p.add_argument("--num-classes", type=int, required=True, help="number of classes K")
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
    p.add_argument("--split", default=None, help="split name when --gt is a VOC tree")
    p.add_argument(
        "--strict",
        action="store_true",
        help="error (instead of a warning) when ground-truth maps have no prediction",
    )
    p.add_argument("--json", default=None, help="write all numbers (fractions) to this file")
    p.add_argument("--plot", default=None, help="draw trimap curves to this PNG (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
