"""pydensecrf's examples/inference.py on deepcrf: only the import lines changed.

Usage: python examples/pydensecrf_migration.py IMAGE ANNO OUTPUT

IMAGE is a photo, ANNO a colour-coded rough annotation of it (full black = unknown), OUTPUT the
refined annotation. With pydensecrf's own example images (im1.png, anno1.png, ...) the outputs
are those its repository ships (tests/compat/test_pydensecrf_upstream_examples.py checks it).
The original reads and writes images with OpenCV or scikit-image; this copy uses Pillow.
Adapted from pydensecrf's examples/inference.py (MIT licence, (c) 2015 Lucas Beyer).
"""

import sys

import numpy as np
from PIL import Image

import deepcrf.compat.pydensecrf.densecrf as dcrf  # was: import pydensecrf.densecrf as dcrf
from deepcrf.compat.pydensecrf.utils import (  # was: from pydensecrf.utils import ...
    create_pairwise_bilateral,
    create_pairwise_gaussian,
    unary_from_labels,
)


def imread(path):
    return np.array(Image.open(path).convert("RGB"))


def imwrite(path, array):
    Image.fromarray(array).save(path)


def main(argv):
    if len(argv) != 4:
        print(f"Usage: python {argv[0]} IMAGE ANNO OUTPUT")
        print("IMAGE and ANNO are inputs and OUTPUT is where the result should be written.")
        print("If there's at least one full-black pixel in ANNO, black means unknown.")
        return 1
    fn_im, fn_anno, fn_output = argv[1:]

    img = imread(fn_im)
    # The annotation's RGB colour as one 32-bit integer 0xBBGGRR, then labels 0, 1, 2, ...
    anno_rgb = imread(fn_anno).astype(np.uint32)
    anno_lbl = anno_rgb[:, :, 0] + (anno_rgb[:, :, 1] << 8) + (anno_rgb[:, :, 2] << 16)
    colors, labels = np.unique(anno_lbl, return_inverse=True)
    has_unk = 0 in colors  # full black means "unknown": it will not be in the output
    if has_unk:
        print("Found a full-black pixel in the annotation: it means 'unknown'.")
        colors = colors[1:]
    colorize = np.empty((len(colors), 3), np.uint8)
    colorize[:, 0] = colors & 0x0000FF
    colorize[:, 1] = (colors & 0x00FF00) >> 8
    colorize[:, 2] = (colors & 0xFF0000) >> 16
    n_labels = len(set(labels.flat)) - int(has_unk)
    print(n_labels, "labels", 'plus "unknown" 0' if has_unk else "")

    # The generic DenseCRF with the feature utilities, as pydensecrf's example does.
    d = dcrf.DenseCRF(img.shape[1] * img.shape[0], n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=has_unk))
    feats = create_pairwise_gaussian(sdims=(3, 3), shape=img.shape[:2])
    d.addPairwiseEnergy(
        feats, compat=3, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC
    )
    feats = create_pairwise_bilateral(sdims=(80, 80), schan=(13, 13, 13), img=img, chdim=2)
    d.addPairwiseEnergy(
        feats, compat=10, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC
    )

    Q = d.inference(5)
    MAP = np.argmax(Q, axis=0)
    imwrite(fn_output, colorize[MAP, :].reshape(img.shape))
    print(f"wrote {fn_output}")

    # Step-by-step inference with the KL divergence, as in pydensecrf's example.
    Q, tmp1, tmp2 = d.startInference()
    for i in range(5):
        print(f"KL-divergence at {i}: {d.klDivergence(Q):.1f}")
        d.stepInference(Q, tmp1, tmp2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
