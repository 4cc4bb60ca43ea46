"""Semantic Boundaries Dataset (Hariharan et al. 2011) -> VOC ``SegmentationClassAug``.

SBD ships ``benchmark_RELEASE/dataset/{cls/<name>.mat, img/<name>.jpg, train.txt, val.txt}``;
each ``.mat`` holds a struct ``GTcls`` whose ``Segmentation`` field is the class map
(0 = background, 1..20, no void band). :func:`convert_sbd` writes those as index PNGs into
``VOC2012/SegmentationClassAug`` and the augmented training list
``trainaug = (SBD train ∪ SBD val ∪ VOC train) − VOC val`` (10,582 names for the real data).
For names that also have a VOC annotation the VOC one is used (it is finer and carries the
void band); SBD-only images missing from ``JPEGImages`` are copied from SBD's ``img``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..viz import save_label_png
from .io import read_label
from .lists import read_list
from .voc import AUG_LABEL_DIR, find_voc_root

__all__ = ["convert_sbd", "read_sbd_mat", "trainaug_names"]


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """The (H, W) int64 class map in an SBD ``cls/*.mat`` file (``GTcls.Segmentation``)."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = "reading SBD .mat files needs scipy: pip install 'deepcrf[data]'"
        raise ImportError(msg) from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sbd: no such file {path}")
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise ValueError(f"sbd: cannot read {path}: {exc}") from exc
    if "GTcls" not in mat:
        raise ValueError(f"sbd: {path} has no 'GTcls' struct (keys: {sorted(mat)})")
    gt = mat["GTcls"]
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise ValueError(f"sbd: {path}: GTcls has no 'Segmentation' field")
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise ValueError(f"sbd: {path}: GTcls.Segmentation has shape {seg.shape}, expected 2-D")
    return seg.astype(np.int64)


def _names(path: Path) -> list[str]:
    return [r[0] for r in read_list(path)]


def trainaug_names(
    sbd_train: list[str], sbd_val: list[str], voc_train: list[str], voc_val: list[str]
) -> list[str]:
    """Sorted (SBD train ∪ SBD val ∪ VOC train) − VOC val."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def convert_sbd(
    sbd_root: str | Path, voc_root: str | Path, list_name: str = "trainaug.txt"
) -> list[str]:
    """Write ``SegmentationClassAug/<name>.png`` for every trainaug name and the list file.

    ``sbd_root`` is ``benchmark_RELEASE`` or its ``dataset`` folder. Returns the names.
    """
    sbd = Path(sbd_root)
    if (sbd / "dataset" / "cls").is_dir():
        sbd = sbd / "dataset"
    if not (sbd / "cls").is_dir():
        raise FileNotFoundError(f"sbd_root: no cls/ folder in {sbd_root} or {sbd_root}/dataset")
    voc = find_voc_root(voc_root)
    seg_sets = voc / "ImageSets" / "Segmentation"
    names = trainaug_names(
        _names(sbd / "train.txt"),
        _names(sbd / "val.txt"),
        _names(seg_sets / "train.txt"),
        _names(seg_sets / "val.txt"),
    )
    out_dir = voc / AUG_LABEL_DIR
    missing = []
    for name in tqdm(names, desc="SBD -> SegmentationClassAug", unit="img"):
        voc_png = voc / "SegmentationClass" / f"{name}.png"
        mat = sbd / "cls" / f"{name}.mat"
        if voc_png.is_file():
            label = read_label(voc_png)
        elif mat.is_file():
            label = read_sbd_mat(mat)
        else:
            missing.append(name)
            continue
        save_label_png(out_dir / f"{name}.png", label, "voc")
        jpg = voc / "JPEGImages" / f"{name}.jpg"
        if not jpg.is_file():
            src = sbd / "img" / f"{name}.jpg"
            if not src.is_file():
                missing.append(name)
                continue
            shutil.copyfile(src, jpg)
    if missing:
        raise FileNotFoundError(
            f"sbd: {len(missing)} trainaug names have no label or image in SBD or VOC: "
            f"{missing[:20]}"
        )
    (seg_sets / list_name).write_text("".join(f"{n}\n" for n in names))
    return names
