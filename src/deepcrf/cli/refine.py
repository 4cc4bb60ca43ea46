"""``deepcrf refine``: dense-CRF refinement of probability maps or label maps.

Three modes:
  * one image: ``deepcrf refine photo.jpg --probs probs.npy --out refined.png``
    (or ``--labels coarse.png --num-labels 21`` with ``--gt-prob``);
  * a folder: ``deepcrf refine images/ --probs probs/ --out refined/`` matches files by
    name stem, shows a progress bar and skips outputs that already exist, so a killed run
    resumes where it stopped (outputs are written atomically);
  * no input: the demo. Refines an embedded synthetic scene, prints what the CRF changed
    and draws refine-demo/comparison.png.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from deepcrf.cli.refine_options import check_conflicts, default_output, label_png_path
from deepcrf.dense import refine, refine_labels
from deepcrf.params import CRFParams

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "refine",
        help="refine segmentation probabilities or labels with a dense CRF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", nargs="?", type=Path, help="image file or folder (omit: demo)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--probs", type=Path, help=".npy (L, H, W) probabilities, or a folder")
    src.add_argument("--labels", type=Path, help="label map PNG (class indices), or a folder")
    p.add_argument("--num-labels", type=int, help="number of classes (with --labels)")
    p.add_argument("--gt-prob", type=float, help="confidence in --labels (default: 0.5)")
    p.add_argument("--ignore-index", type=int, help="unsure label in --labels (default: 255)")
    p.add_argument("--logits", action="store_true", help="--probs holds scores, not probabilities")
    p.add_argument(
        "--out",
        type=Path,
        help="output .png (default: refined/<image name>.png); in folder mode the output "
        "folder (required); in the demo its folder (default: refine-demo)",
    )
    p.add_argument("--save-probs", action="store_true", help="also write the marginals (.npy)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--jobs", type=int, default=1, help="folder mode: worker processes")
    p.add_argument("--shard", metavar="i/n", help="folder mode: only shard i of n (by name)")
    p.add_argument("--palette", default="voc", help="palette of the output PNG (voc, cityscapes)")
    g = p.add_argument_group(
        "CRF parameters (DeepLab names in brackets; choose them with deepcrf crf-search)"
    )
    CRFParams.add_arguments(g)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.set_defaults(func=run)


def crf_options(args: argparse.Namespace) -> dict:
    """refine() keyword arguments: ``--crf-params`` (or the defaults) and single-value flags."""
    if getattr(args, "_crf_options", None) is None:
        args._crf_options = CRFParams.from_args(args).to_dict()
    return args._crf_options


def run(args: argparse.Namespace) -> int:
    check_conflicts(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    crf_options(args)  # a bad --crf-params file or flag fails before any work
    if args.image is None:
        return run_demo(args)
    if args.probs is None and args.labels is None:
        raise ValueError("--probs or --labels: one of them is required with an image")
    if args.labels is not None and args.num_labels is None:
        raise ValueError("--num-labels: required with --labels")
    if args.image.is_dir():
        return run_folder(args)
    if not args.image.exists():
        raise FileNotFoundError(f"image: {args.image} does not exist")
    source = args.probs if args.probs is not None else args.labels
    out = label_png_path(args.out) if args.out else default_output(args.image, [args.image, source])
    refine_one(args, args.image, source, out)
    print(f"wrote {out}")
    return 0


def refine_one(args: argparse.Namespace, image_path: Path, source: Path, out: Path) -> np.ndarray:
    """Refine one image; write the label PNG (and marginals); return the marginals."""
    from deepcrf.data.io import read_image, read_label
    from deepcrf.viz import save_label_png

    image = read_image(image_path)
    device = torch.device(args.device)
    if args.probs is not None:
        probs = _load_probs(source, image.shape[:2])
        q = refine(
            torch.from_numpy(probs).to(device),
            torch.from_numpy(image).permute(2, 0, 1).to(device),
            logits=args.logits,
            **crf_options(args),
        )
    else:
        labels = read_label(source)
        if labels.shape != image.shape[:2]:
            raise ValueError(f"labels: {source} is {labels.shape}, image is {image.shape[:2]}")
        q = refine_labels(
            torch.from_numpy(labels).to(device),
            torch.from_numpy(image).permute(2, 0, 1).to(device),
            args.num_labels,
            gt_prob=args.gt_prob,
            ignore_index=args.ignore_index,
            **crf_options(args),
        )
    q = q.cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic(out, lambda tmp: save_label_png(tmp, q.argmax(0).astype(np.uint8), args.palette))
    if args.save_probs:
        _atomic(out.with_suffix(".npy"), lambda tmp: np.save(tmp, q))
    return q


def run_folder(args: argparse.Namespace) -> int:
    source_dir = args.probs if args.probs is not None else args.labels
    if not source_dir.is_dir():
        raise ValueError(
            f"--probs/--labels: with an image folder this must be a folder, got {source_dir}"
        )
    if args.out is None:
        raise ValueError("--out: required in folder mode (the output folder)")
    images = sorted(p for p in args.image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"image: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.image}")
    suffix = ".npy" if args.probs is not None else ".png"
    missing = [p.name for p in images if not (source_dir / (p.stem + suffix)).exists()]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"{source_dir}: no {suffix} file for {len(missing)} images: {shown}"
        )
    from deepcrf.cli.batch import BatchItem, run_batch, summary_line

    items = [
        BatchItem(p.stem, (p, source_dir / (p.stem + suffix)), args.out / (p.stem + ".png"))
        for p in images
    ]
    summary = run_batch(
        items,
        functools.partial(_refine_item, _plain_args(args)),
        jobs=args.jobs,
        shard_spec=args.shard,
        overwrite=args.overwrite,
        desc="refine",
    )
    print(summary_line("refined", summary, args.shard, args.out))
    return 0


def _plain_args(args: argparse.Namespace) -> argparse.Namespace:
    """The options without the callables argparse carries (workers receive a pickled copy)."""
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if not callable(v)})


def _refine_item(args: argparse.Namespace, item) -> None:
    """One folder-mode image (runs in a worker process with --jobs)."""
    refine_one(args, item.inputs[0], item.inputs[1], item.output)


def run_demo(args: argparse.Namespace) -> int:
    """The main job: refine the embedded sample and explain what the CRF did."""
    from deepcrf.cli.demo import run_demo as demo

    demo(CRFParams.from_dict(crf_options(args)), args.out, args.device)
    return 0


def _load_probs(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"probs: {path} does not exist")
    probs = np.load(path)
    if probs.ndim != 3 or probs.shape[1:] != tuple(shape):
        raise ValueError(
            f"probs: {path} has shape {probs.shape}; expected (L, {shape[0]}, {shape[1]})"
        )
    return probs.astype(np.float32, copy=False)


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
