"""``deepcrf convert``: turn the papers' released weights into a deepcrf model (.safetensors).

Reads a Caffe ``.caffemodel`` (DeepLab v1, its ImageNet initialisations, FCN-8s, CRF-as-RNN)
or crfasrnn_pytorch's ``.pth`` without Caffe, prints which layers were mapped to which
parameters and which were left out, and writes a model that ``--model`` of predict / eval and
``deepcrf.models.load_model`` use directly (its input convention is recorded in it).

  deepcrf convert TVG_CRFRNN_COCO_VOC.caffemodel --arch crfasrnn --out crfasrnn.safetensors
  deepcrf predict --model crfasrnn.safetensors photo.jpg --out labels/

A file that does not fit --arch (another architecture, another class count) is refused with
every layer that does not fit, both shapes named; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from ..models.convert import convert_file

    report = convert_file(args.source, args.arch, args.out, num_classes=args.num_classes)
    lines = report.lines()
    if args.quiet:
        lines = [lines[0]] + [line for line in lines if line.startswith("  left out")]
    for line in lines:
        print(line)
    print(f"wrote {args.out}")
    sys.stdout.flush()
    return 0


def register(subparsers) -> None:
    from ..models.convert_archs import ARCHS

    p = subparsers.add_parser(
        "convert",
        help="convert released Caffe / PyTorch weights (DeepLab, FCN-8s, CRF-as-RNN)",
        description=__doc__,
    )
    p.add_argument("source", help="a .caffemodel (or a .pth for --arch crfasrnn_pytorch)")
    p.add_argument(
        "--arch",
        required=True,
        choices=list(ARCHS),
        metavar="ARCH",
        help="what the source is: deeplab_largefov, deeplab (any DeepLab v1 fc6), "
        "deeplab_msc_largefov, vgg16_init (vgg16_20M / vgg16_128), fcn8s, crfasrnn "
        "(TVG_CRFRNN_COCO_VOC.caffemodel), crfasrnn_pytorch (crfasrnn_weights.pth)",
    )
    p.add_argument("--out", required=True, help="the model to write (.safetensors)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=21,
        help="classes of the source's classifier (default 21, PASCAL VOC); for vgg16_init "
        "the classes of the new, randomly initialised classifier",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)
