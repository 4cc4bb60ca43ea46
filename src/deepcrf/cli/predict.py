"""``deepcrf predict``: label photos with a trained model, optionally with the dense CRF.

  deepcrf predict --model RUN IMAGE_OR_DIR ... --out DIR [--crf] [--crf-params FILE.json]
                  [--save-probs]

Writes ``DIR/<stem>.png`` (palette PNG of class indices) per image and, with
``--save-probs``, ``DIR/<stem>.npy`` (the (L, H, W) float32 probabilities the labels were
taken from: the CRF's marginals with ``--crf``). Outputs are written atomically and
existing ones are skipped, so a killed run resumes where it stopped (``--overwrite`` redoes
them). ``--model`` is a run folder of ``deepcrf train`` or its .safetensors file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _inputs(paths: list[Path]) -> dict[str, Path]:
    from ..data.io import IMAGE_EXTENSIONS
    from ..fileio import files_by_stem

    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            items = files_by_stem(path, IMAGE_EXTENSIONS, "IMAGE_OR_DIR")
        elif path.is_file():
            items = {path.stem: path}
        else:
            raise FileNotFoundError(f"IMAGE_OR_DIR: no such file or folder {path}")
        for stem, file in items.items():
            if stem in found and found[stem] != file:
                raise ValueError(
                    f"IMAGE_OR_DIR: two images named {stem!r}: {found[stem]} and {file}; their "
                    "outputs would collide"
                )
            found[stem] = file
    if not found:
        raise ValueError("IMAGE_OR_DIR: no images found")
    return found


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..data.io import read_image
    from ..fileio import atomic_write, remove_stale_temps
    from ..params import CRFParams
    from ..recipes import crf_refine, load_run, model_probabilities
    from ..viz import save_label_png

    images = _inputs(args.inputs)
    loaded = load_run(args.model, args.device)
    crf = CRFParams.load(args.crf_params) if args.crf_params else (loaded.crf if args.crf else None)
    if crf is not None and loaded.has_own_crf:
        print("note: the model ends in its own trained CRF; it is not applied a second time")
        crf = None
    out = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    inputs = {p.resolve() for p in images.values()}
    done = skipped = 0
    for stem, path in tqdm(sorted(images.items()), desc="predict", unit="img"):
        png, npy = out / f"{stem}.png", out / f"{stem}.npy"
        if png.resolve() in inputs:
            raise ValueError(f"--out: {png} would overwrite an input image")
        if not args.overwrite and png.exists() and (npy.exists() or not args.save_probs):
            skipped += 1
            continue
        raw = read_image(path)
        probs = model_probabilities(loaded.model, raw, args.device)
        if crf is not None:
            probs = crf_refine(probs, raw, crf)
        if args.save_probs:
            atomic_write(npy, lambda tmp, p=probs: np.save(tmp, p.astype(np.float32)))
        labels = probs.argmax(0).astype(np.uint8)
        atomic_write(png, lambda tmp, lab=labels: save_label_png(tmp, lab, args.palette))
        done += 1
    print(f"predicted {done} images into {out}" + (f" ({skipped} already done)" if skipped else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label images with a trained model (deepcrf train), optionally + dense CRF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="run folder or .safetensors of deepcrf train")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_DIR", help="images/folders")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--crf", action="store_true", help="dense CRF with the run's parameters")
    p.add_argument("--crf-params", default=None, help="JSON of refine() keyword arguments")
    p.add_argument("--save-probs", action="store_true", help="also write <stem>.npy")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    p.add_argument("--palette", default="voc", help="palette of the PNGs (voc, cityscapes)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)
