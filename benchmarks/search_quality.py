"""Does the chosen CRF beat no CRF and the defaults, on the searched AND on held-out images?

For each setting, the first ``--search`` images are searched and the next ``--held-out``
images are only scored. Settings:

* ``scenes-noiseN-sS``: the project's generated scenes (``deepcrf.data.SyntheticScenes``,
  96x96, 7 classes, void band 3) with stride-8 coarse probabilities
  (``deepcrf.data.coarse_probabilities``, noise N), scene seed S;
* ``run:PATH``: a probability folder written by ``deepcrf crf-search --model`` (its
  ``<out>.probs`` with images/, probs/ and labels/), e.g. a tiny DeepLab trained with
  ``deepcrf train deeplab --preset tiny``.

Rows: no CRF, the default parameters (DeepLab-LargeFOV's), ``grid_search`` (DeepLab's
coarse-to-fine protocol) and ``fit`` (gradient descent, the default settings), mIoU % on the
searched and on the held-out images, and the time each took.

Usage: python benchmarks/search_quality.py [--settings scenes-noise1-s1,run:/tmp/x.probs]
       [--search 16] [--held-out 16] [--jobs 2] [--no-grid]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepcrf.data import SyntheticScenes, coarse_probabilities
from deepcrf.params import CRFParams
from deepcrf.search import Sample, folder_samples, grid_search
from deepcrf.search.fit import fit, score_params
from deepcrf.search.samples import check_samples


def scene_samples(seed: int, count: int, noise: float) -> list[Sample]:
    scenes = SyntheticScenes(count, size=(96, 96), seed=seed, normalize=None, void_band=3)
    out = []
    for i in range(count):
        image, label = scenes.generate(i)
        probs = coarse_probabilities(label, 7, stride=8, noise=noise, seed=seed * 1000 + i)
        out.append(Sample(f"{seed}_{i:03d}", image, probs.astype(np.float32), label))
    return out


def setting_samples(name: str, count: int) -> list:
    if name.startswith("run:"):
        folder = name[4:]
        return folder_samples(f"{folder}/images", f"{folder}/probs", f"{folder}/labels")[:count]
    try:
        noise_text, seed_text = name.removeprefix("scenes-noise").split("-s")
        return scene_samples(int(seed_text), count, float(noise_text))
    except ValueError:
        raise SystemExit(
            f"--settings: expected scenes-noiseN-sS or run:FOLDER, got {name!r}"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="scenes-noise1-s1,scenes-noise2-s2")
    parser.add_argument("--search", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-grid", action="store_true", help="skip the grid search")
    args = parser.parse_args()
    print("| setting | method | searched mIoU % | held-out mIoU % | s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.settings.split(","):
        samples = setting_samples(name, args.search + args.held_out)
        searched, held = samples[: args.search], samples[args.search :]
        k = check_samples(samples)
        rows = [
            ("no CRF", CRFParams(iterations=0).to_dict(), 0.0),
            ("defaults", CRFParams().to_dict(), 0.0),
        ]
        if not args.no_grid:
            start = time.perf_counter()
            grid = grid_search(searched, jobs=args.jobs)
            rows.append(("grid best", grid.best, time.perf_counter() - start))
        start = time.perf_counter()
        fitted = fit(searched, jobs=args.jobs)
        seconds = time.perf_counter() - start
        rows.append((f"fit best (from {fitted.start_name})", fitted.params, seconds))
        for label, params, seconds in rows:
            a = score_params(params, searched, k, jobs=args.jobs)["miou"]
            b = score_params(params, held, k, jobs=args.jobs)["miou"]
            print(f"| {name} | {label} | {100 * a:.2f} | {100 * b:.2f} | {seconds:.0f} |")
        print(f"|  | fit best params: {fitted.params} |  |  |  |", flush=True)


if __name__ == "__main__":
    main()
