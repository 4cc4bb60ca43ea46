"""``deepcrf refine``: dense-CRF refinement of probability maps or label maps.

Three modes:
  * one image: ``deepcrf refine photo.jpg --probs probs.npy --out refined.png``
    (or ``--labels coarse.png --num-labels 21`` with ``--gt-prob``);
  * a folder: ``deepcrf refine images/ --probs probs/ --out refined/`` matches files by
    name stem (two files with one stem are an error), shows a progress bar and skips images
    whose outputs all exist, so a killed run resumes where it stopped (``--jobs``,
    ``--shard i/n`` for several processes or machines);
  * no input: the demo. Refines an embedded synthetic scene, prints what the CRF changed
    and draws refine-demo/comparison.png.

Outputs never replace inputs: an output path that is (or resolves to) an input file, an
output folder that is an input folder, or ``--save-probs DIR`` equal to an input folder is
refused before anything is written. An image's outputs (label PNG, and the marginals
``DIR/<name>.npy`` with ``--save-probs DIR``) are committed as a unit (temporary files
fsynced, then renamed); temporaries of a killed run are removed by the next run. Label maps
with more than 255 classes are written as 16-bit PNGs (255 is void in 8-bit maps). Large
images are refined in overlapping tiles within a memory budget (``--tile``).
"""

from __future__ import annotations

import argparse
import functools
import math
import mmap
from pathlib import Path

import numpy as np
import torch

from deepcrf import tiling
from deepcrf.cli.batch import add_batch_arguments
from deepcrf.cli.refine_options import check_conflicts, default_output, label_png_path
from deepcrf.data.io import IMAGE_EXTENSIONS, MAX_8BIT_LABELS
from deepcrf.dense import refine, refine_labels
from deepcrf.fileio import (
    atomic_write_many,
    file_identity,
    files_by_stem,
    remove_stale_temps,
    same_file,
)
from deepcrf.params import CRFParams


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
        "folder (required); in the demo its folder (default: refine-demo); never an input "
        "file or folder",
    )
    p.add_argument(
        "--save-probs",
        type=Path,
        metavar="DIR",
        help="also write the marginals as DIR/<name>.npy (a folder other than the inputs')",
    )
    add_batch_arguments(p)  # --jobs, --shard (folder mode), --overwrite
    p.add_argument("--palette", default="voc", help="palette of the output PNG (voc, cityscapes)")
    g = p.add_argument_group(
        "CRF parameters (DeepLab names in brackets; choose them with deepcrf crf-search)"
    )
    CRFParams.add_arguments(g)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    p.add_argument(
        "--tile",
        type=int,
        help="refine in overlapping tiles of this size (default: only above the memory "
        "budget, DEEPCRF_MEMORY_BUDGET)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.set_defaults(func=run)


def crf_options(args: argparse.Namespace) -> dict:
    """refine() keyword arguments: ``--crf-params`` (or the defaults) and single-value flags."""
    if getattr(args, "_crf_options", None) is None:
        args._crf_options = CRFParams.from_args(args).to_dict()
    return args._crf_options


def run(args: argparse.Namespace) -> int:
    check_conflicts(args)
    check_args(args)
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
    if not source.is_file():
        what = "--probs" if args.probs is not None else "--labels"
        raise FileNotFoundError(f"{what}: {source} does not exist (or is not a file)")
    out = label_png_path(args.out) if args.out else default_output(args.image, [args.image, source])
    if out.is_dir():
        raise IsADirectoryError(f"--out: {out} is a folder; give the output PNG's path")
    outputs = output_paths(args, out)
    guard_outputs(outputs, [args.image, source], [args.image.parent, source.parent], args)
    _remove_stale_temps(outputs)
    refine_one(args, args.image, source, outputs)
    print(f"wrote {', '.join(str(p) for p in outputs)}")
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Argument values argparse cannot check; errors name the flag."""
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a positive number of threads, got {args.threads}")
    if args.num_labels is not None and not 2 <= args.num_labels <= 65535:
        raise ValueError(f"--num-labels: expected 2..65535 classes, got {args.num_labels}")
    if not (math.isfinite(args.gt_prob) and 0.0 < args.gt_prob < 1.0):
        raise ValueError(f"--gt-prob: expected a probability in (0, 1), got {args.gt_prob}")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile: expected a positive tile size in pixels, got {args.tile}")
    args.device = check_device(args.device)


def check_device(name: str) -> torch.device:
    """``name`` as a torch device that exists on this machine (else a ValueError naming it)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device: not a torch device: {name!r} ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {name!r} requested, but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device: {name!r}: only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device: {name!r} requested, but MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device: unsupported device type {device.type!r} (cpu, cuda, mps)")
    return device


def output_paths(args: argparse.Namespace, out: Path) -> list[Path]:
    """Every output of one image: the label PNG, then the marginals with ``--save-probs``."""
    outputs = [out]
    if args.save_probs is not None:
        outputs.append(args.save_probs / (out.stem + ".npy"))
    return outputs


def guard_outputs(
    outputs: list[Path], inputs: list[Path], input_dirs: list[Path], args: argparse.Namespace
) -> None:
    """Refuse, before anything is written, outputs that are (or resolve to, through
    symbolic or hard links) an input file and a ``--save-probs`` folder that is an input
    folder."""
    if args.save_probs is not None:
        if args.save_probs.exists() and not args.save_probs.is_dir():
            raise NotADirectoryError(f"--save-probs: {args.save_probs} exists and is not a folder")
        for folder in input_dirs:
            if same_file(args.save_probs, folder):
                raise ValueError(
                    f"--save-probs: {args.save_probs} is an input folder ({folder}); "
                    "give the marginals a folder of their own"
                )
    taken: dict = {}
    for inp in inputs:
        for key in file_identity(inp):
            taken[key] = inp
    for out in outputs:
        hit = next((taken[key] for key in file_identity(out) if key in taken), None)
        if hit is not None:
            raise ValueError(
                f"--out/--save-probs: output {out} would overwrite the input {hit}; "
                "choose another output path"
            )


def refine_one(
    args: argparse.Namespace, image_path: Path, source: Path, outputs: list[Path]
) -> None:
    """Refine one image and commit its outputs as a unit (label PNG [+ marginals .npy]).

    Images whose CRF would exceed the memory budget are refined in tiles (``--tile`` or
    ``DEEPCRF_MEMORY_BUDGET``); the probabilities are memory-mapped and read tile by tile,
    and the marginals are streamed to disk, so memory stays bounded whatever the size."""
    from deepcrf.data.io import read_image, read_label, write_label

    image = read_image(image_path)
    spatial = image.shape[:2]
    if args.probs is not None:
        source_array = _load_probs(source, spatial)
        num_labels = source_array.shape[0]
    else:
        source_array = read_label(source)
        if source_array.shape != spatial:
            raise ValueError(
                f"--labels: {source} is {source_array.shape}, image {image_path} is {spatial}"
            )
        num_labels = args.num_labels
    options = crf_options(args)
    planned = tiling.plan(spatial, num_labels, options, args.tile)
    core, overlap = planned if planned else (list(spatial), [0, 0])
    run_crf = _crf_function(args, num_labels)
    label = np.empty(spatial, dtype=np.uint16 if num_labels > MAX_8BIT_LABELS else np.uint8)

    def tiles():
        try:
            for box, q in tiling.iter_tiles(run_crf, source_array, image, options, core, overlap):
                label[box] = q.argmax(0)
                yield box, q
                _drop_pages(source_array)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{image_path} with {source}: {exc}") from exc

    def write_probs(tmp: Path) -> None:
        shape = (num_labels, *spatial)
        marginals = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for box, q in tiles():
            marginals[(Ellipsis, *box)] = q
            marginals.flush()
            _drop_pages(marginals)
        marginals.flush()
        del marginals

    writes = []
    if len(outputs) > 1:
        outputs[1].parent.mkdir(parents=True, exist_ok=True)
        writes.append((outputs[1], write_probs))
    else:
        for _ in tiles():
            pass
    outputs[0].parent.mkdir(parents=True, exist_ok=True)
    writes.append((outputs[0], lambda tmp: write_label(tmp, label, args.palette)))
    atomic_write_many(writes)


def _crf_function(args: argparse.Namespace, num_labels: int):
    """refine (probs) or refine_labels (label maps) of one numpy tile on ``args.device``."""
    device = args.device

    def image_tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device)

    def run_probs(probs: np.ndarray, image: np.ndarray, **options) -> np.ndarray:
        q = refine(
            torch.from_numpy(probs).to(device), image_tensor(image), logits=args.logits, **options
        )
        return q.cpu().numpy()

    def run_labels(labels: np.ndarray, image: np.ndarray, **options) -> np.ndarray:
        q = refine_labels(
            torch.from_numpy(np.ascontiguousarray(labels)).to(device),
            image_tensor(image),
            num_labels,
            gt_prob=args.gt_prob,
            ignore_index=args.ignore_index,
            **options,
        )
        return q.cpu().numpy()

    return run_probs if args.probs is not None else run_labels


def _remove_stale_temps(outputs: list[Path]) -> None:
    """Delete what a killed run left while writing these outputs (and only these)."""
    by_folder: dict[Path, list[str]] = {}
    for path in outputs:
        by_folder.setdefault(path.parent, []).append(path.name)
    for folder, names in by_folder.items():
        remove_stale_temps(folder, names)


def _drop_pages(array: np.ndarray) -> None:
    """Let the kernel drop a memory map's resident pages (they are re-read from the file)."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - platform without madvise
            pass


def run_folder(args: argparse.Namespace) -> int:
    source_dir = args.probs if args.probs is not None else args.labels
    what = "--probs" if args.probs is not None else "--labels"
    if not source_dir.is_dir():
        raise ValueError(f"{what}: with an image folder this must be a folder, got {source_dir}")
    if args.out is None:
        raise ValueError("--out: required in folder mode (the output folder)")
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"--out: {args.out} exists and is not a folder")
    for folder in (args.image, source_dir):
        if same_file(args.out, folder):
            raise ValueError(
                f"--out: {args.out} is an input folder ({folder}); write the refined label "
                "maps to a folder of their own"
            )
    images = files_by_stem(args.image, IMAGE_EXTENSIONS, "image")
    if not images:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"image: no images ({known}) in {args.image}")
    suffix = ".npy" if args.probs is not None else ".png"
    sources = files_by_stem(source_dir, [suffix], what)
    missing = [images[s].name for s in images if s not in sources]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"{what}: {source_dir} has no {suffix} file for {len(missing)} images: {shown}"
        )
    inputs = list(images.values()) + [sources[s] for s in images]
    plan = {stem: output_paths(args, args.out / (stem + ".png")) for stem in images}
    every_output = [path for outputs in plan.values() for path in outputs]
    guard_outputs(every_output, inputs, [args.image, source_dir], args)
    from deepcrf.cli.batch import BatchItem, run_batch, summary_line

    items = [
        BatchItem(stem, (images[stem], sources[stem]), plan[stem][0], tuple(plan[stem][1:]))
        for stem in sorted(images)
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
    refine_one(args, item.inputs[0], item.inputs[1], list(item.outputs))


def run_demo(args: argparse.Namespace) -> int:
    """The main job: refine the embedded sample and explain what the CRF did."""
    from deepcrf.cli.demo import run_demo as demo

    demo(CRFParams.from_dict(crf_options(args)), args.out, args.device)
    return 0


def _load_probs(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The (L, H, W) probabilities of ``path``, memory-mapped (read tile by tile)."""
    if not path.exists():
        raise FileNotFoundError(f"--probs: {path} does not exist")
    try:
        probs = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        if isinstance(exc, (PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"--probs: cannot read {path} as a .npy array: {exc}") from exc
    if not isinstance(probs, np.ndarray) or probs.dtype.kind != "f":
        kind = getattr(probs, "dtype", type(probs).__name__)
        raise ValueError(f"--probs: {path} holds {kind}; expected float (L, H, W) probabilities")
    if probs.ndim != 3 or probs.shape[1:] != tuple(shape):
        raise ValueError(
            f"--probs: {path} has shape {probs.shape}; expected (L, {shape[0]}, {shape[1]})"
        )
    return probs
