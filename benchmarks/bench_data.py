"""Throughput of the data side: synthetic scene generation, trimap EDT vs scipy, evaluation.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_data.py``. Prints a table;
ratios are against scipy measured in the same run (machines are shared and noisy).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from deepcrf.data import SyntheticScenes
from deepcrf.metrics import ConfusionMatrix, TrimapConfusion, squared_distance_to


def rate(fn, n: int) -> float:
    fn(0)
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def main() -> None:
    print(f"{'what':<48} {'per second':>12}")
    for size, n in (((128, 128), 300), ((256, 256), 100), ((512, 512), 20)):
        ds = SyntheticScenes(n, size=size, seed=0)
        what = "SyntheticScenes.generate " + "x".join(map(str, size))
        print(f"{what:<48} {rate(ds.generate, n):>10.0f}/s")
        ds = SyntheticScenes(n, size=size, seed=0, void_band=5)
        print(f"{'  with void_band=5':<48} {rate(ds.generate, n):>10.0f}/s")

    rng = np.random.default_rng(0)
    gt = np.zeros((375, 500), np.int64)
    gt[100:250, 150:400] = 15
    gt[95:100, 150:400] = 255
    gt[rng.random(gt.shape) < 0.001] = 255
    void = torch.from_numpy(gt == 255)
    try:
        from scipy.ndimage import distance_transform_edt

        t_scipy = 1 / rate(lambda i: distance_transform_edt(gt != 255), 20)
    except ImportError:
        t_scipy = float("nan")
    t_ours = 1 / rate(lambda i: squared_distance_to(void, max_distance=40), 20)
    t_full = 1 / rate(lambda i: squared_distance_to(void), 5)
    print(f"{'EDT 500x375, scipy (reference)':<48} {1 / t_scipy:>10.0f}/s")
    print(
        f"{'EDT 500x375, ours, reach 40 (ratio to scipy)':<48} {1 / t_ours:>10.0f}/s"
        f"  x{t_scipy / t_ours:.2f}"
    )
    print(f"{'EDT 500x375, ours, unbounded':<48} {1 / t_full:>10.0f}/s  x{t_scipy / t_full:.2f}")

    pred = np.where(rng.random(gt.shape) < 0.9, gt, 0)
    pred[pred == 255] = 0
    cm = ConfusionMatrix(21)
    r = rate(lambda i: cm.update(pred, gt), 50)
    print(f"{'ConfusionMatrix.update 500x375':<48} {r:>10.0f}/s")
    tri = TrimapConfusion(21, [1, 2, 5, 10, 20, 40])
    print(
        f"{'TrimapConfusion.update 500x375, 6 widths':<48} "
        f"{rate(lambda i: tri.update(pred, gt), 20):>10.0f}/s"
    )


if __name__ == "__main__":
    main()
