"""SBD conversion, Cityscapes, NYUDv2, PASCAL-Context and folder datasets on generated trees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepcrf.data import (
    Cityscapes,
    FolderSegmentation,
    NYUDv2,
    PascalContext,
    VOCSegmentation,
    class_names,
    convert_cityscapes_trainids,
    convert_sbd,
    labelids_to_trainids,
    read_label,
    read_sbd_mat,
)
from deepcrf.data.sbd import trainaug_names
from deepcrf.viz import save_label_png
from fake_trees import blocky_scene, make_voc_tree


def test_class_lists():
    assert len(class_names("voc")) == 21 and class_names("voc")[15] == "person"
    assert len(class_names("cityscapes")) == 19
    assert len(class_names("nyud")) == 40
    assert len(class_names("context")) == 60 and class_names("context")[0] == "background"
    assert len(set(class_names("context"))) == 60
    with pytest.raises(ValueError, match="unknown dataset"):
        class_names("coco-stuff")


def test_trainaug_set_algebra():
    names = trainaug_names(["a", "b", "c"], ["d", "v1"], ["e", "a"], ["v1", "v2"])
    assert names == ["a", "b", "c", "d", "e"]


def test_sbd_conversion(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    make_voc_tree(tmp_path / "voc", {"train": ["v_train"], "val": ["v_val", "s_val"]}, k=21)
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    rng = np.random.default_rng(0)
    segs = {}
    for name in ["s_train", "s_val", "v_train"]:
        raw, seg = blocky_scene(rng, 24, 32, 21, void=False)
        seg = seg.astype(np.uint8)
        segs[name] = seg
        gt = {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.array([1])}
        scipy_io.savemat(sbd / "cls" / f"{name}.mat", {"GTcls": gt})
        Image.fromarray(raw).save(sbd / "img" / f"{name}.jpg")
    (sbd / "train.txt").write_text("s_train\nv_train\n")
    (sbd / "val.txt").write_text("s_val\n")
    np.testing.assert_array_equal(read_sbd_mat(sbd / "cls" / "s_train.mat"), segs["s_train"])
    names = convert_sbd(tmp_path / "benchmark_RELEASE", tmp_path / "voc")
    assert names == ["s_train", "v_train"]  # s_val is a VOC val image
    ds = VOCSegmentation(tmp_path / "voc", "trainaug")
    assert ds.names == names
    np.testing.assert_array_equal(ds[0]["label"].numpy(), segs["s_train"])
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    np.testing.assert_array_equal(  # the VOC annotation (with void) wins where there is one
        ds[1]["label"].numpy(), read_label(voc / "SegmentationClass" / "v_train.png")
    )
    assert (voc / "JPEGImages" / "s_train.jpg").is_file()  # copied from SBD
    bad = sbd / "cls" / "bad.mat"
    scipy_io.savemat(bad, {"other": np.zeros(2)})
    with pytest.raises(ValueError, match="GTcls"):
        read_sbd_mat(bad)


def make_cityscapes(root, with_train_ids: bool):
    rng = np.random.default_rng(1)
    ids = {}
    for city, stem in [("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")]:
        img_dir = root / "leftImg8bit" / "val" / city
        gt_dir = root / "gtFine" / "val" / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        label_ids = rng.integers(0, 34, (16, 20)).astype(np.uint8)
        Image.fromarray(rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)).save(
            img_dir / f"{stem}_leftImg8bit.png"
        )
        Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        if with_train_ids:
            train_ids = labelids_to_trainids(label_ids)
            save_label_png(gt_dir / f"{stem}_gtFine_labelTrainIds.png", train_ids)
        ids[stem] = label_ids
    return ids


def test_labelid_table():
    got = labelids_to_trainids(np.array([0, 7, 8, 11, 24, 26, 33, 29, -1, 34]))
    np.testing.assert_array_equal(got, [255, 0, 1, 2, 11, 13, 18, 255, 255, 255])


@pytest.mark.parametrize("with_train_ids", [False, True])
def test_cityscapes(tmp_path, with_train_ids):
    ids = make_cityscapes(tmp_path, with_train_ids)
    ds = Cityscapes(tmp_path, "val")
    assert ds.names == sorted(ids)
    for i, stem in enumerate(ds.names):
        s = ds[i]
        np.testing.assert_array_equal(s["label"].numpy(), labelids_to_trainids(ids[stem]))
        assert np.array_equal(s["raw_image"].numpy(), np.asarray(Image.open(ds.entries[i][1])))
    if not with_train_ids:
        assert convert_cityscapes_trainids(tmp_path, "val") == 2
        assert Cityscapes(tmp_path, "val").label_map is None
    with pytest.raises(FileNotFoundError, match="split 'train'"):
        Cityscapes(tmp_path, "train")


def test_nyud_label_shift(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels40").mkdir()
    raw = np.zeros((4, 4, 3), np.uint8)
    lab = np.array([[0, 1, 40, 2]] * 4, dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "images" / "0001.png")
    Image.fromarray(lab).save(tmp_path / "labels40" / "0001.png")
    (tmp_path / "train.txt").write_text("0001\n")
    s = NYUDv2(tmp_path, "train")[0]
    np.testing.assert_array_equal(s["label"].numpy()[0], [255, 0, 39, 1])
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        NYUDv2(tmp_path, "test")


def test_pascal_context(tmp_path):
    make_voc_tree(tmp_path, {"train": ["x"]}, k=60, label_dir="SegmentationClassContext")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("x\n")
    ds = PascalContext(tmp_path, "val")
    assert ds.num_classes == 60 and ds[0]["label"].shape == (24, 32)


def test_folder_pairs_and_errors(tmp_path):
    imgs, masks = tmp_path / "img", tmp_path / "mask"
    imgs.mkdir()
    masks.mkdir()
    for n in ["a", "b", "c"]:
        Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(imgs / f"{n}.jpg")
    for n in ["a", "b", "d"]:
        save_label_png(masks / f"{n}.png", np.ones((3, 3), np.int64))
    with pytest.raises(FileNotFoundError) as exc:
        FolderSegmentation(imgs, masks, 2)
    assert "['c']" in str(exc.value) and "['d']" in str(exc.value)
    lst = tmp_path / "list.txt"
    lst.write_text("a\nb\n")
    ds = FolderSegmentation(imgs, masks, 2, list_file=lst)
    assert ds.names == ["a", "b"] and int(ds[1]["label"].sum()) == 9
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        FolderSegmentation(empty, masks, 2)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="mode 'RGB'"):
        read_label(rgb)
