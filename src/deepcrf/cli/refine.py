"""``deepcrf refine``: dense-CRF refinement of probability maps or label maps.

Three modes:
  * one image: ``deepcrf refine photo.jpg --probs probs.npy --out refined.png``
    (or ``--labels coarse.png --num-labels 21`` with ``--gt-prob``);
  * a folder: ``deepcrf refine images/ --probs probs/ --out refined/`` matches files by
    name stem, shows a progress bar and skips outputs that already exist, so a killed run
    resumes where it stopped (outputs are written atomically);
  * no input: refines an embedded synthetic sample and prints what the CRF changed.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepcrf.dense import refine, refine_labels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
DEMO_DIR = "refine-demo"


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
    p.add_argument("--gt-prob", type=float, default=0.5, help="confidence in --labels")
    p.add_argument("--ignore-index", type=int, default=255, help="unsure label in --labels")
    p.add_argument("--logits", action="store_true", help="--probs holds scores, not probabilities")
    p.add_argument("--out", type=Path, help="output PNG (or folder in folder mode)")
    p.add_argument("--save-probs", action="store_true", help="also write the marginals (.npy)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--jobs", type=int, default=1, help="folder mode: worker processes")
    p.add_argument("--shard", metavar="i/n", help="folder mode: only shard i of n (by name)")
    p.add_argument("--palette", default="voc", help="palette of the output PNG (voc, cityscapes)")
    g = p.add_argument_group("CRF parameters (DeepLab names in brackets)")
    g.add_argument("--iterations", type=int, default=10)
    g.add_argument("--gaussian-sxy", type=float, default=3.0, help="[σγ]")
    g.add_argument("--gaussian-compat", type=float, default=3.0, help="[w2]")
    g.add_argument("--bilateral-sxy", type=float, default=80.0, help="[σα]")
    g.add_argument("--bilateral-srgb", type=float, default=13.0, help="[σβ]")
    g.add_argument("--bilateral-compat", type=float, default=10.0, help="[w1]")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.set_defaults(func=run)


def crf_options(args: argparse.Namespace) -> dict:
    return {
        "iterations": args.iterations,
        "gaussian_sxy": args.gaussian_sxy,
        "gaussian_compat": args.gaussian_compat,
        "bilateral_sxy": args.bilateral_sxy,
        "bilateral_srgb": args.bilateral_srgb,
        "bilateral_compat": args.bilateral_compat,
    }


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
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
    out = args.out or args.image.with_name(args.image.stem + "_crf.png")
    source = args.probs if args.probs is not None else args.labels
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
        functools.partial(_refine_item, args),
        jobs=args.jobs,
        shard_spec=args.shard,
        overwrite=args.overwrite,
        desc="refine",
    )
    print(summary_line("refined", summary, args.shard, args.out))
    return 0


def _refine_item(args: argparse.Namespace, item) -> None:
    """One folder-mode image (runs in a worker process with --jobs)."""
    refine_one(args, item.inputs[0], item.inputs[1], item.output)


def run_demo(args: argparse.Namespace) -> int:
    """Refine an embedded synthetic scene and report what the CRF changed."""
    from deepcrf.data import SyntheticScenes, coarse_probabilities
    from deepcrf.metrics import ConfusionMatrix
    from deepcrf.viz import colorize

    scenes = SyntheticScenes(1, size=(240, 320), seed=0)
    image, label = scenes.generate(0)
    k = scenes.num_classes
    probs = coarse_probabilities(label, k, stride=8, noise=1.0, seed=0)
    start = time.perf_counter()
    refined = refine(probs, image, **crf_options(args))
    elapsed = time.perf_counter() - start
    before, after = probs.argmax(0), refined.argmax(0)
    scores = [ConfusionMatrix(k).update(p, label).scores() for p in (before, after)]
    changed = before != after
    fixed = int((changed & (after == label)).sum())
    broken = int((changed & (before == label)).sum())
    print(
        "deepcrf refine: embedded sample (synthetic 320x240 scene, coarse stride-8 probabilities)"
    )
    print(
        f"  pixel accuracy  before {scores[0]['pixel_acc']:6.2%}   "
        f"after {scores[1]['pixel_acc']:6.2%}"
    )
    print(f"  mean IoU        before {scores[0]['miou']:6.2%}   after {scores[1]['miou']:6.2%}")
    print(
        f"  pixels changed  {int(changed.sum())} of {changed.size}: "
        f"{fixed} corrected, {broken} broken"
    )
    print(f"  CRF time        {elapsed * 1e3:.0f} ms ({args.iterations} mean-field iterations)")
    out = args.out or Path(DEMO_DIR)
    out.mkdir(parents=True, exist_ok=True)
    row = [
        image,
        np.asarray(colorize(before).convert("RGB")),
        np.asarray(colorize(after).convert("RGB")),
    ]
    from PIL import Image

    Image.fromarray(np.concatenate(row, axis=1)).save(out / "comparison.png")
    print(f"  wrote {out / 'comparison.png'} (image | coarse | refined)")
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
