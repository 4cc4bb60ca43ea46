"""``deepcrf data``: make and convert datasets (synthetic scenes, SBD, Cityscapes trainIds)."""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}")
    return vals[0], vals[1]


def _synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import SyntheticScenes, write_voc_tree

    scenes = SyntheticScenes(
        args.n, size=args.size, num_classes=args.num_classes, seed=args.seed,
        void_band=args.void_band,
    )  # fmt: skip
    voc = write_voc_tree(scenes, args.out, val_fraction=args.val_fraction)
    print(f"wrote {args.n} scenes to {voc}")
    return 0


def _sbd(args: argparse.Namespace) -> int:
    from ..data.sbd import convert_sbd

    names = convert_sbd(args.sbd, args.voc, list_name=args.list_name)
    print(f"wrote {len(names)} labels to SegmentationClassAug and the list {args.list_name}")
    return 0


def _cityscapes(args: argparse.Namespace) -> int:
    from ..data.cityscapes import convert_cityscapes_trainids

    n = convert_cityscapes_trainids(args.root, args.split)
    print(f"wrote {n} *_gtFine_labelTrainIds.png files")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="make or convert datasets",
        description="Make synthetic datasets, or convert SBD and Cityscapes annotations into "
        "the label maps deepcrf trains on.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "synth",
        help="write synthetic scenes as a VOC-layout tree",
        description="Write procedural scenes (textured road, water and grass; cars and boats "
        "that only context tells apart; people; thin poles) with exact label maps, as a "
        "PASCAL VOC tree: OUT/VOCdevkit/VOC2012 with JPEGImages, SegmentationClass and "
        "ImageSets/Segmentation/{train,val,trainval}.txt. Scenes are a deterministic function of "
        "--seed and their index.",
    )
    s.add_argument("--out", required=True, help="output folder (gets VOCdevkit/VOC2012)")
    s.add_argument("--n", type=int, required=True, help="number of scenes")
    s.add_argument("--size", type=_size, default=(128, 128), help="HxW (default 128x128)")
    s.add_argument("--num-classes", type=int, default=7, help="3..7 (default 7)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the scenes")
    s.add_argument(
        "--void-band", type=int, default=0, help="width of a void (255) band around objects, px"
    )
    s.add_argument("--val-fraction", type=float, default=0.2, help="share of scenes in val")
    s.set_defaults(func=_synth)

    s = sub.add_parser(
        "sbd-convert",
        help="SBD .mat files -> SegmentationClassAug + trainaug",
        description="Convert the SBD annotations (benchmark_RELEASE .mat files) into PNG label "
        "maps in VOC's SegmentationClassAug folder and write the train_aug list.",
    )
    s.add_argument("--sbd", required=True, help="benchmark_RELEASE (or its dataset folder)")
    s.add_argument("--voc", required=True, help="VOC root (VOCdevkit parent, VOCdevkit, VOC2012)")
    s.add_argument("--list-name", default="trainaug.txt", help="list file name to write")
    s.set_defaults(func=_sbd)

    s = sub.add_parser(
        "cityscapes-trainids",
        help="write labelTrainIds from labelIds",
        description="Write *_gtFine_labelTrainIds.png next to every *_gtFine_labelIds.png "
        "(the 19 training classes, 255 for the rest), as cityscapesScripts does.",
    )
    s.add_argument("--root", required=True, help="Cityscapes root (holds gtFine)")
    s.add_argument("--split", default=None, help="only this split")
    s.set_defaults(func=_cityscapes)
