"""VOCSegmentation on generated trees: roots, splits, list files, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepcrf.data import VOCSegmentation
from deepcrf.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("level", ["parent", "devkit", "voc2012"])
def test_roots_and_sample_contents(voc_tree, level):
    root, data = voc_tree
    sub = {"parent": root, "devkit": root / "VOCdevkit", "voc2012": root / "VOCdevkit" / "VOC2012"}
    ds = VOCSegmentation(sub[level], "train")
    assert len(ds) == 2 and ds.names == ["2008_000001", "2008_000002"]
    s = ds[1]
    raw, label = data["2008_000002"]
    assert s["name"] == "2008_000002"
    assert s["label"].dtype == torch.int64 and s["label"].shape == (24, 32)
    np.testing.assert_array_equal(s["label"].numpy(), label)
    assert s["raw_image"].dtype == torch.uint8 and s["raw_image"].shape == (24, 32, 3)
    assert np.abs(s["raw_image"].numpy().astype(int) - raw).max() <= 3  # JPEG q100
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 24, 32)
    ref = (s["raw_image"].numpy() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(s["image"].permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_trainval_and_caffe_normalisation(voc_tree):
    root, _ = voc_tree
    ds = VOCSegmentation(root, "trainval", normalize="caffe")
    assert len(ds) == 3
    s = ds[0]
    bgr = s["raw_image"].numpy()[..., ::-1].astype(np.float32) - [104.008, 116.669, 122.675]
    np.testing.assert_allclose(s["image"].permute(1, 2, 0).numpy(), bgr, atol=1e-4)


def test_trainaug_from_aug_labels(tmp_path):
    from fake_trees import make_voc_tree

    make_voc_tree(tmp_path, {"trainaug": ["a", "b", "c"]}, label_dir="SegmentationClassAug")
    ds = VOCSegmentation(tmp_path, "trainaug")
    assert ds.names == ["a", "b", "c"]
    assert ds.entries[0][2].parent.name == "SegmentationClassAug"
    assert ds[2]["label"].shape == (24, 32)


def test_trainaug_missing_list_is_explained(voc_tree):
    with pytest.raises(FileNotFoundError, match="sbd-convert"):
        VOCSegmentation(voc_tree[0], "trainaug")


def test_list_file_of_pairs(voc_tree, tmp_path):
    root, data = voc_tree
    lst = tmp_path / "pairs.txt"
    lst.write_text(
        "/JPEGImages/2008_000003.jpg /SegmentationClass/2008_000003.png\n"
        "\nJPEGImages/2008_000001.jpg SegmentationClass/2008_000001.png\n"
    )
    ds = VOCSegmentation(root, str(lst))
    assert ds.names == ["2008_000003", "2008_000001"]
    np.testing.assert_array_equal(ds[0]["label"].numpy(), data["2008_000003"][1])


def test_missing_files_are_listed(voc_tree):
    root, _ = voc_tree
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass" / "2008_000002.png").unlink()
    (voc / "JPEGImages" / "2008_000001.jpg").unlink()
    with pytest.raises(FileNotFoundError) as exc:
        VOCSegmentation(root, "train")
    msg = str(exc.value)
    assert "2 of 2 entries" in msg and "2008_000001.jpg" in msg and "2008_000002.png" in msg


def test_bad_root_split_and_labels(voc_tree, tmp_path):
    root, _ = voc_tree
    with pytest.raises(FileNotFoundError, match="root"):
        VOCSegmentation(tmp_path / "nothing", "train")
    with pytest.raises(FileNotFoundError, match="split"):
        VOCSegmentation(root, "nosuchsplit")
    ds = VOCSegmentation(root, "train", num_classes=2)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        for i in range(len(ds)):
            ds[i]
    empty = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no samples"):
        VOCSegmentation(root, "empty")


def test_unreadable_image_names_file(voc_tree):
    root, _ = voc_tree
    bad = root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2008_000001.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"2008_000001\.jpg"):
        VOCSegmentation(root, "train")[0]


def test_real_voc_samples_as_folder(voc_samples):
    from deepcrf.data import FolderSegmentation

    images = voc_samples[0][0].parent
    lst_names = [p.stem for p, _ in voc_samples]
    # the shared folder keeps labels next to images as <name>_labels.png: pair explicitly
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        lst = Path(d) / "list.txt"
        lst.write_text("".join(f"{p} {lab}\n" for p, lab in voc_samples))
        ds = FolderSegmentation(images, images, 21, list_file=lst)
        assert ds.names == lst_names
        for i in range(len(ds)):
            s = ds[i]
            assert s["label"].shape == s["raw_image"].shape[:2] == s["image"].shape[1:]
            assert int(s["label"].max()) < 21
