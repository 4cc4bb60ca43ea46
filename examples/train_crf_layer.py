"""Train a dense CRF layer on top of a network (CRF-as-RNN / Schwing & Urtasun's schedule).

Usage: python examples/train_crf_layer.py [--steps N] [--size PIXELS]

Stage 1 trains the network alone (its new classifier with a larger learning rate); stage 2
puts ``deepcrf.nn.DenseCRF`` on top and trains both end to end, the CRF learning its label
compatibility. The data are generated scenes (``deepcrf.data.SyntheticScenes``) and the
network a tiny stride-4 CNN, so that this runs on a CPU in seconds; with DeepLab use
``deepcrf.models.build("deeplab_largefov", 21)`` and ``top=("fc8.",)``.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from deepcrf.data import SyntheticScenes
from deepcrf.nn import DenseCRF, two_stage_param_groups
from deepcrf.params import PRESETS


class TinyNet(nn.Module):
    """A stride-4 segmentation CNN: its scores are upsampled bilinearly, like DeepLab's."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(24, 24, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=2, dilation=2), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Conv2d(24, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.classifier(self.features(x))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def batches(scenes: SyntheticScenes, batch_size: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(scenes), (batch_size,), generator=g).tolist()
        samples = [scenes[i] for i in idx]
        yield tuple(torch.stack([s[k] for s in samples]) for k in ("image", "raw_image", "label"))


def accuracy(cnn: nn.Module, crf: DenseCRF | None, scenes: SyntheticScenes) -> float:
    """Pixel accuracy on ``scenes`` (the CRF runs its ``eval_iterations``)."""
    cnn.eval()
    if crf is not None:
        crf.eval()
    right = total = 0
    with torch.no_grad():
        for image, raw, label in batches(scenes, len(scenes), 1, seed=0):
            scores = cnn(image)
            if crf is not None:
                scores = crf(scores, raw.permute(0, 3, 1, 2).float())
            right += int((scores.argmax(1) == label).sum())
            total += label.numel()
    cnn.train()
    return right / total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="stage-1 steps (stage 2: half)")
    parser.add_argument("--size", type=int, default=64, help="scene size in pixels")
    args = parser.parse_args(argv[1:])
    torch.manual_seed(0)
    train = SyntheticScenes(32, size=(args.size, args.size), seed=1)
    val = SyntheticScenes(8, size=(args.size, args.size), seed=2)
    k = train.num_classes
    cnn = TinyNet(k)
    # Start from pydensecrf's example weights: strong smoothing suits these small, clean scenes
    # (for your data, start from `deepcrf crf-search`'s choice: DenseCRF.from_params).
    crf = DenseCRF.from_params(k, PRESETS["pydensecrf"], iterations=5, learn_compat=True)

    # Stage 1: the network alone; the classifier learns 10x faster than the features.
    groups = two_stage_param_groups(cnn, crf, 1, top=("classifier.",), lr_unary=0.01, lr_top=0.1)
    opt = torch.optim.SGD(groups, momentum=0.9)
    for image, _, label in batches(train, 4, args.steps, seed=1):
        opt.zero_grad()
        F.cross_entropy(cnn(image), label, ignore_index=255).backward()
        opt.step()
    print(f"network alone:                val pixel accuracy {accuracy(cnn, None, val):.2%}")
    print(f"+ CRF layer (untrained):      val pixel accuracy {accuracy(cnn, crf, val):.2%}")

    # Stage 2: network and CRF end to end (the CRF parameters without weight decay).
    groups = two_stage_param_groups(cnn, crf, 2, lr_joint=0.003, lr_crf=0.003)
    opt = torch.optim.SGD(groups, momentum=0.9)
    for image, raw, label in batches(train, 4, max(1, args.steps // 2), seed=2):
        opt.zero_grad()
        refined = crf(cnn(image), raw.permute(0, 3, 1, 2).float())
        F.cross_entropy(refined, label, ignore_index=255).backward()
        # Mean field sharpens the scores: clip the rare huge gradient instead of diverging.
        nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], max_norm=1.0)
        opt.step()
    print(f"+ CRF layer, trained jointly: val pixel accuracy {accuracy(cnn, crf, val):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
