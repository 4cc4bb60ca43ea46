"""Post-process a segmentation network's output with the dense CRF (DeepLab's recipe).

Usage:
    python examples/postprocess_network_output.py IMAGE PROBS.npy OUT.png
    python examples/postprocess_network_output.py            # a generated stand-in

IMAGE is the photo, PROBS.npy the network's class probabilities (L, H, W) at the photo's
size (upsample them first: a stride-8 network predicts a coarser grid), OUT.png the refined
label map. Without arguments a synthetic scene with ground truth and stride-8 probabilities
stand in for them, and the script also shows the batched torch call and the scores.
"""

import sys

import numpy as np
import torch
from PIL import Image

import deepcrf
from deepcrf.params import CRFParams
from deepcrf.viz import save_label_png


def refine_one(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """numpy in, numpy out: image (H, W, 3) uint8 0..255, probs (L, H, W) -> labels (H, W)."""
    params = CRFParams()  # DeepLab-LargeFOV's published values; tune with `deepcrf crf-search`
    marginals = deepcrf.refine(probs, image, **params.to_dict())
    return marginals.argmax(0)


def refine_batch(images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """torch: a batch of raw images (B, 3, H, W) and network scores (B, L, H, W), on any
    device; ``logits=True`` because these are scores, not probabilities."""
    marginals = deepcrf.refine(logits, images, logits=True, **CRFParams().to_dict())
    return marginals.argmax(1)


def main(argv: list[str]) -> int:
    if len(argv) == 4:
        image = np.array(Image.open(argv[1]).convert("RGB"))
        labels = refine_one(image, np.load(argv[2]))
        save_label_png(argv[3], labels.astype(np.uint8))
        print(f"wrote {argv[3]}")
        return 0
    if len(argv) != 1:
        print(__doc__)
        return 1
    from deepcrf.data import SyntheticScenes, coarse_probabilities

    scenes = SyntheticScenes(2, size=(120, 160), seed=7)
    pairs = [scenes.generate(i) for i in range(2)]
    for image, gt in pairs:
        probs = coarse_probabilities(gt, scenes.num_classes, stride=8, seed=0)
        before, after = (probs.argmax(0) == gt).mean(), (refine_one(image, probs) == gt).mean()
        print(f"one image:  pixel accuracy {before:.2%} -> {after:.2%}")

    images = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in pairs])
    gts = torch.stack([torch.from_numpy(gt) for _, gt in pairs])
    logits = coarse_probabilities(gts, scenes.num_classes, stride=8, seed=0).log()
    before = (logits.argmax(1) == gts).float().mean()
    after = (refine_batch(images, logits) == gts).float().mean()
    print(f"a batch:    pixel accuracy {before:.2%} -> {after:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
