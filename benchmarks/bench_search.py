"""CRF parameter search: deepcrf's grid search vs pydensecrf in a process pool.

What public grid-search scripts do: a multiprocessing pool runs pydensecrf's DenseCRF2D
(build + 10 iterations + argmax) for every (grid point, image) and sums confusion matrices.
deepcrf's ``grid_search`` with the same number of processes shares each image's lattices
across the kernel weights (w1) and runs the points of one (σα, σβ) together.

Images: the four VOC photos of ../shared/data/voc-samples with coarse probabilities
(``deepcrf.data.coarse``), repeated to make up ``--images``. Prints seconds per grid point
per 100 images for both, their ratio (measured in the same run), and the mIoU each found for
the best point (the two implementations must agree on the scores).

Usage: python benchmarks/bench_search.py [--images 8] [--jobs 2] [--sxy 60,100] [--srgb 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepcrf.data import coarse_probabilities
from deepcrf.metrics import confusion_matrix, scores_from_confusion
from deepcrf.search import Sample, grid_search
from deepcrf.search.grid import expand_grid, validate_grid

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLES = ROOT.parent / "shared" / "data" / "voc-samples"
NUM_LABELS = 21


def voc_samples(count: int, folder: Path = VOC_SAMPLES) -> list[Sample]:
    photos = sorted(p for p in folder.glob("*.png") if not p.stem.endswith("_labels"))
    if not photos:
        raise SystemExit(f"no photos in {folder}")
    out = []
    for i in range(count):
        path = photos[i % len(photos)]
        image = np.array(Image.open(path).convert("RGB"))
        label = np.array(Image.open(path.with_name(path.stem + "_labels.png"))).astype(np.int64)
        label = np.where(label < NUM_LABELS, label, 255)
        probs = coarse_probabilities(label, NUM_LABELS, seed=i)
        out.append(Sample(f"{path.stem}_{i}", image, probs, label))
    return out


_POOL_SAMPLES: list[Sample] = []


def _pool_init(samples: list[Sample]) -> None:
    global _POOL_SAMPLES
    _POOL_SAMPLES = samples


def _pydensecrf_task(task: tuple[int, dict, int]) -> tuple[int, np.ndarray]:
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    index, p, image_index = task
    s = _POOL_SAMPLES[image_index]
    h, w = s.label.shape
    d = dcrf.DenseCRF2D(w, h, NUM_LABELS)
    d.setUnaryEnergy(unary_from_softmax(s.probs))
    d.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
    d.addPairwiseBilateral(
        sxy=p["bilateral_sxy"],
        srgb=p["bilateral_srgb"],
        rgbim=np.ascontiguousarray(s.image),
        compat=p["bilateral_compat"],
    )
    q = np.array(d.inference(p["iterations"])).reshape(NUM_LABELS, h, w)
    return index, confusion_matrix(q.argmax(0), s.label, NUM_LABELS).numpy()


def pydensecrf_pool(samples: list[Sample], points: list[dict], jobs: int) -> list[float]:
    """mIoU per point, computed the way public scripts do (fork pool, one task per pair)."""
    tasks = [(i, p, j) for i, p in enumerate(points) for j in range(len(samples))]
    totals = [np.zeros((NUM_LABELS, NUM_LABELS), np.int64) for _ in points]
    with multiprocessing.get_context("fork").Pool(
        jobs, initializer=_pool_init, initargs=(samples,)
    ) as pool:
        for index, conf in pool.imap_unordered(_pydensecrf_task, tasks, chunksize=1):
            totals[index] += conf
    return [scores_from_confusion(c)["miou"] for c in totals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sxy", default="60,100", help="σα values")
    parser.add_argument("--srgb", default="5", help="σβ values")
    parser.add_argument("--samples", type=Path, default=VOC_SAMPLES, help="voc-samples folder")
    args = parser.parse_args()
    grid = validate_grid(
        {
            "bilateral_compat": [3, 4, 5, 6, 8, 10],
            "bilateral_sxy": [float(v) for v in args.sxy.split(",")],
            "bilateral_srgb": [float(v) for v in args.srgb.split(",")],
        }
    )
    points = expand_grid(grid)
    samples = voc_samples(args.images, args.samples)
    per = 100.0 / (len(points) * len(samples))
    # grid_search also scores the two baselines: no CRF (free) and the default point
    per_ours = 100.0 / ((len(points) + 1) * len(samples))

    start = time.perf_counter()
    ours = grid_search(samples, grid, jobs=args.jobs)
    t_ours = time.perf_counter() - start  # includes 2 baseline points and process start-up
    ours_miou = {json_key(r["params"]): r["miou"] for r in ours.results}

    try:
        start = time.perf_counter()
        ref = pydensecrf_pool(samples, points, args.jobs)
        t_ref = time.perf_counter() - start
    except ImportError:
        t_ref, ref = float("nan"), [float("nan")] * len(points)

    diffs = [abs(ours_miou[json_key(p)] - m) for p, m in zip(points, ref)]
    print(
        f"grid: {len(points)} points (6 w1 x {len(grid['bilateral_sxy'])} σα x "
        f"{len(grid['bilateral_srgb'])} σβ, w2=3, σγ=3, 10 iterations) on {len(samples)} "
        f"VOC-size images, {args.jobs} processes (CPU, shared machine: compare the ratio)\n"
    )
    print("| implementation | s per grid point per 100 images | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| pydensecrf, Pool({args.jobs}) | {t_ref * per:.1f} | 1.00 |")
    print(
        f"| deepcrf grid_search(jobs={args.jobs}) | "
        f"{t_ours * per_ours:.1f} | "
        f"{(t_ref * per) / (t_ours * per_ours):.2f}x |"
    )
    print(f"\nmax |mIoU difference| between the two over the grid: {max(diffs):.2e}")


def json_key(params: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in params.items()))


if __name__ == "__main__":
    main()
