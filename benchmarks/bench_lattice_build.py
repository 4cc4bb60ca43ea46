"""Lattice build A/B: this checkout's ``build_lattice`` against another git revision's.

Loads ``src/deepcrf/lattice.py`` as it is at ``--against`` (default ``main``) next to the
current one and times both on the VOC photos, alternating calls in one process (the
machine is shared: a burst of load then hits both sides), for DeepLab's and pydensecrf's
bilateral kernels (121/5, 80/13), IRN's (50/5) and the grid kernel (sxy 3). Prints
medians (and minima) in ms, CPU time on 1 thread and wall time otherwise, the ratio of
medians, and whether both builds gave bit-identical lattices.

Usage: python benchmarks/bench_lattice_build.py [--against main] [--threads 1,2] [--repeats 9]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepcrf import lattice as current
from deepcrf.features import bilateral_features, grid_features

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLES = ROOT.parent / "shared" / "data" / "voc-samples"
FIELDS = ("splat_index", "splat_offsets", "splat_weight", "slice_index", "slice_weight")
KERNELS = {
    "bilateral 121/5": lambda img: bilateral_features(img, 121.0, 5.0),
    "bilateral 80/13": lambda img: bilateral_features(img, 80.0, 13.0),
    "bilateral 50/5": lambda img: bilateral_features(img, 50.0, 5.0),
    "grid 3": lambda img: grid_features(tuple(img.shape[:2]), 3.0),
}


def lattice_module_at(revision: str, folder: Path):
    """``deepcrf/lattice.py`` as it is at git ``revision``, imported as its own module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/deepcrf/lattice.py"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    path = folder / "lattice_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("lattice_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


def identical(a, b) -> bool:
    """Whether two lattices are the same bit for bit (integer tables compared as int64)."""

    def field(lattice, name: str) -> torch.Tensor:
        value = getattr(lattice, name)
        return value.long() if not value.is_floating_point() else value

    if a.num_vertices != b.num_vertices:
        return False
    if not all(torch.equal(field(a, name), field(b, name)) for name in FIELDS):
        return False
    return all(
        torch.equal(x, y) for s, t in zip(a.blur_stencils, b.blur_stencils) for x, y in zip(s, t)
    )


def compare(reference, features: torch.Tensor, repeats: int) -> dict:
    """Alternating builds by both modules: median and minimum ms of each, bit identity."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    samples = {"reference": [], "current": []}
    same = identical(reference.build_lattice(features), current.build_lattice(features))
    for _ in range(repeats):
        for key, module in (("reference", reference), ("current", current)):
            start = clock()
            module.build_lattice(features)
            samples[key].append(clock() - start)
    result = {"identical": same}
    for key, values in samples.items():
        result[key] = statistics.median(values) * 1e3
        result[key + "_min"] = min(values) * 1e3
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--photos", type=Path, default=VOC_SAMPLES, help="folder of VOC photos")
    args = parser.parse_args()
    paths = sorted(p for p in args.photos.glob("*.png") if not p.stem.endswith("_labels"))
    if not paths:
        sys.exit(f"--photos: no photos (*.png) in {args.photos}")
    with tempfile.TemporaryDirectory() as folder:
        reference = lattice_module_at(args.against, Path(folder))
        for threads in (int(t) for t in args.threads.split(",") if t):
            torch.set_num_threads(threads)
            clock = "CPU" if threads == 1 else "wall"
            print(f"\n{threads} thread(s), {clock} ms, median (min) of {args.repeats}")
            print(
                f"| photo | kernel | vertices | {args.against} ms | this ms | this / "
                f"{args.against} | bit-identical |"
            )
            print("|---" * 7 + "|")
            for path in paths:
                image = torch.from_numpy(np.array(Image.open(path).convert("RGB")))
                for name, make in KERNELS.items():
                    features = make(image)
                    row = compare(reference, features, args.repeats)
                    vertices = current.build_lattice(features).num_vertices
                    print(
                        f"| {path.stem} | {name} | {vertices} | {row['reference']:.1f} "
                        f"({row['reference_min']:.1f}) | {row['current']:.1f} "
                        f"({row['current_min']:.1f}) | {row['current'] / row['reference']:.2f}x"
                        f" | {'yes' if row['identical'] else 'NO'} |"
                    )


if __name__ == "__main__":
    main()
