"""``deepcrf pseudo-label``: pseudo-label PNGs from a folder of class activation maps.

    deepcrf pseudo-label --cams cams/ --images JPEGImages/ --out ir_label/ --preset irn --jobs 2

Each ``NAME.npy`` in --cams (IRN's pickled dict with ``keys`` and ``high_res``, read without
running code, or a plain (K, H, W) array) is paired with the image of the same stem in
--images; the label map goes to ``--out/NAME.png`` (VOC palette; 0 background, class c+1,
255 uncertain). ``--preset irn`` is IRN's cam_to_ir_label step exactly; psa, clip_es and toco
are the other published procedures (``deepcrf.weak.PRESETS``). Flags override a preset's
values. Outputs are written atomically and existing ones are skipped, so a killed run
resumes; ``--shard i/n`` splits the files by name across machines.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from deepcrf.cli.batch import BatchItem, add_batch_arguments, run_batch, summary_line
from deepcrf.data.io import IMAGE_EXTENSIONS
from deepcrf.fileio import files_by_stem
from deepcrf.params import CRFParams
from deepcrf.weak import PRESETS

_METHOD_KEYS = (
    "background",
    "alpha",
    "threshold",
    "fg_threshold",
    "bg_threshold",
    "confidence",
    "unary",
    "gt_prob",
    "bg_rule",
    "num_classes",
)


def _alpha(text: str) -> float | tuple[float, float]:
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or two like 4,32, got {text!r}"
        ) from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected one or two powers, got {text!r}")
    return values[0] if len(values) == 1 else values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pseudo-label",
        help="pseudo-label PNGs from class activation maps (IRN, PSA, CLIP-ES, ToCo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cams", type=Path, required=True, help="folder of CAM .npy files")
    p.add_argument("--images", type=Path, required=True, help="folder of the images")
    p.add_argument("--out", type=Path, required=True, help="output folder of label PNGs")
    p.add_argument("--preset", choices=sorted(PRESETS), default="irn", help="default: irn")
    m = p.add_argument_group("procedure (overrides the preset's values)")
    m.add_argument("--background", choices=("constant", "power"))
    m.add_argument("--alpha", type=_alpha, help="power of (1 - max CAM), or fg,bg powers")
    m.add_argument("--threshold", type=float, help="constant background score (one run)")
    m.add_argument("--fg-threshold", type=float, help="background score of the fg run")
    m.add_argument("--bg-threshold", type=float, help="background score of the bg run")
    m.add_argument("--confidence", type=float, help="255 where the top marginal is below")
    m.add_argument("--unary", choices=("softmax", "labels"))
    m.add_argument("--gt-prob", type=float, help="confidence in the CAM labels (unary labels)")
    m.add_argument("--bg-rule", choices=("both", "bg_run"), help="dual run background rule")
    m.add_argument("--num-classes", type=int, help="foreground classes; keys must be below")
    g = p.add_argument_group("CRF parameters (defaults shown are irn's; each preset has its own)")
    CRFParams.add_arguments(g, defaults=CRFParams.from_dict(_crf_part(PRESETS["irn"])))
    add_batch_arguments(p)
    p.add_argument("--palette", default="voc", help="palette of the output PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, fast_exit=True)  # outputs are complete files: skip the teardown


def _crf_part(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in CRFParams.names()}


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``pseudo_labels`` keyword arguments: the preset, then the flags given."""
    preset = PRESETS[args.preset]
    given = {k for k in _METHOD_KEYS if getattr(args, k, None) is not None}
    method = {k: v for k, v in preset.items() if k in _METHOD_KEYS}
    method.update({k: getattr(args, k) for k in given})
    # a flag choosing another background model replaces the preset's values for the old one
    dropped = set()
    if "threshold" in given:
        dropped |= {"fg_threshold", "bg_threshold"}
    if given & {"fg_threshold", "bg_threshold"}:
        dropped.add("threshold")
    if method.get("background") == "power":
        dropped |= {"threshold", "fg_threshold", "bg_threshold"}
    for key in dropped - given:
        method.pop(key, None)
    crf = CRFParams.from_args(args, defaults=CRFParams.from_dict(_crf_part(preset)))
    return {**method, **crf.to_dict()}


def label_one(options: dict[str, Any], palette: str, item: BatchItem) -> None:
    """Pseudo-label one image (runs in a worker): read, label, write the PNG atomically."""
    from deepcrf.data.cams import read_cams
    from deepcrf.data.io import read_image
    from deepcrf.fileio import atomic_write
    from deepcrf.viz import save_label_png
    from deepcrf.weak import pseudo_labels

    cam_path, image_path = item.inputs
    cams, keys = read_cams(cam_path)
    image = read_image(image_path)
    if cams.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"--cams: {cam_path.name} is {cams.shape[1]}x{cams.shape[2]} but the image "
            f"{image_path.name} is {image.shape[0]}x{image.shape[1]}; CAMs must be at image "
            "size (IRN's high_res, not its strided cam)"
        )
    labels = pseudo_labels(cams, image, keys, **options)
    atomic_write(item.output, lambda tmp: save_label_png(tmp, labels, palette))


def image_size(item: BatchItem) -> tuple[int, int]:
    """(width, height) from the item's image header (no decoding); (0, 0) when unreadable,
    which the worker then reports with the file's name."""
    from PIL import Image

    try:
        with Image.open(item.inputs[1]) as image:
            return image.size
    except (OSError, ValueError):
        return (0, 0)


def work_cost(item: BatchItem, size=image_size) -> float:
    """An image's estimated work: its pixels (``size(item)``: the lattice build) plus its
    CAM file's float32 values (about pixels x classes: the mean field's channels, from the
    file's size; nothing is read)."""
    width, height = size(item)
    try:
        cam_values = item.inputs[0].stat().st_size / 4
    except OSError:
        cam_values = 0.0
    return width * height + cam_values


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    cams = files_by_stem(args.cams, [".npy"], "--cams")
    if not cams:
        raise ValueError(f"--cams: no .npy files in {args.cams}")
    images = files_by_stem(args.images, IMAGE_EXTENSIONS, "--images")
    missing = sorted(set(cams) - set(images))
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"--images: no image in {args.images} for {len(missing)} CAM files: {shown}"
        )
    if args.out.resolve() in (args.cams.resolve(), args.images.resolve()):
        raise ValueError("--out: must differ from --cams and --images (inputs are never touched)")
    items = [
        BatchItem(name, (cams[name], images[name]), args.out / f"{name}.png")
        for name in sorted(cams)
    ]
    work = functools.partial(label_one, options, args.palette)
    size = functools.lru_cache(maxsize=None)(image_size)  # one header read per item
    summary = run_batch(
        items,
        work,
        jobs=args.jobs,
        shard_spec=args.shard,
        overwrite=args.overwrite,
        desc="pseudo-label",
        show=not args.quiet,
        order=size,  # one size after another: each grid lattice built by one process
        cost=functools.partial(work_cost, size=size),  # costliest at both ends: even ending
    )
    print(summary_line("pseudo-labelled", summary, args.shard, args.out))
    return 0
