"""Training throughput of each recipe: images/s of the tiny and paper settings, the CRF
layer's share of a training step, peak memory; and DDP with 2 processes against 1.

One optimiser step = forward + backward + update on random inputs of the preset's crop
size and batch (paper settings use a reduced batch on CPU, printed). The CRF share is the
time of the CRF layer's forward + backward inside the step (CRF-as-RNN, joint). Times are
medians over repeats; the machine's load is printed, since a shared machine distorts them.

Usage: python benchmarks/bench_train.py [--device cpu|cuda] [--repeats 5] [--paper-batch 1]
       [--ddp]   (the DDP row trains the deeplab tiny preset on generated scenes with
                  torchrun, 1 vs 2 processes, and reports the wall-time ratio)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from deepcrf.models import build
from deepcrf.recipes import RECIPES, resolve_config
from deepcrf.recipes.engine import run_crf_options, segmentation_loss
from deepcrf.recipes.optim import build_optimizer
from deepcrf.recipes.predict import channels_last


def _model(config, num_classes: int, device):
    options = dict(config.model.options)
    if config.model.name in ("crfasrnn", "joint_deeplab_crf"):
        options["crf"] = run_crf_options(config)
    return build(config.model.name, num_classes, **options).to(device).train()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_time(config, batch: int, device, repeats: int, num_classes: int = 21) -> float:
    """Median seconds of one optimiser step (forward, loss, backward, update)."""
    model = _model(config, num_classes, device)
    optimizer = build_optimizer(model, config.optim)
    size, stride = config.data.crop_size, config.data.label_stride
    # the network's input in the layout the training loop gives it (engine._forward)
    x = channels_last(torch.randn(batch, 3, size, size, device=device))
    raw = torch.rand(batch, 3, size, size, device=device) * 255
    label = torch.randint(0, num_classes, (batch, size, size), device=device)
    valid = torch.tensor([label[:, ::stride, ::stride].numel()], device=device)
    needs_image = getattr(model, "needs_image", False)
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        logits = model(x, raw) if needs_image else model(x)
        segmentation_loss(logits, label, stride, valid).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if i:  # the first step warms caches up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def crf_fwd_bwd(config, batch: int, device, repeats: int, num_classes: int = 21):
    """Median seconds of the CRF layer's forward + backward alone on the step's sizes."""
    model = _model(config, num_classes, device)
    crf = getattr(model, "crf", None)
    if crf is None:
        return None
    size = config.data.crop_size
    unary = torch.randn(batch, num_classes, size, size, device=device, requires_grad=True)
    raw = torch.rand(batch, 3, size, size, device=device) * 255
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        crf(unary, raw).logsumexp(1).mean().backward()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ddp_ratio(processes: int) -> float:
    """Wall seconds of a short deeplab tiny run under torchrun with ``processes``."""
    with tempfile.TemporaryDirectory() as tmp:
        from deepcrf.data import SyntheticScenes, write_voc_tree

        write_voc_tree(SyntheticScenes(40, size=(96, 96), seed=1), tmp, val_fraction=0.1)
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, 2 // processes))}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m", "deepcrf", "train", "deeplab",
               "--preset", "tiny", "--data-root", tmp, "--out", str(Path(tmp) / "run"),
               "--set", "train.steps=30", "--set", "train.save_every=0", "--quiet"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paper-batch", type=int, default=1)
    parser.add_argument("--paper", action="store_true", help="also time the paper settings")
    parser.add_argument("--ddp", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg()[0]
    print(f"device {device}, torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print()
    print("| recipe | preset | crop | batch | s/step | images/s | CRF share | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    presets = ["tiny", "paper"] if args.paper else ["tiny"]
    for name in RECIPES:
        for preset in presets:
            config = resolve_config(name, preset)
            batch = config.train.batch_size if preset == "tiny" else args.paper_batch
            step = step_time(config, batch, device, args.repeats)
            crf = crf_fwd_bwd(config, batch, device, args.repeats)
            share = "-" if crf is None else f"{100 * min(crf / step, 1):.0f} %"
            print(f"| {name} | {preset} | {config.data.crop_size} | {batch} | {step:.3f} | "
                  f"{batch / step:.1f} | {share} | {peak_rss_mb():.0f} |")  # fmt: skip
    if args.ddp:
        one, two = ddp_ratio(1), ddp_ratio(2)
        print()
        print("| DDP (deeplab tiny, 30 steps, gloo) | wall s | ratio to 1 process |")
        print("|---|---|---|")
        print(f"| 1 process | {one:.1f} | 1.00 |")
        print(f"| 2 processes (1 thread each) | {two:.1f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
