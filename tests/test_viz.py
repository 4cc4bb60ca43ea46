"""Palettes, palette PNG round trips and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepcrf.viz import colorize, overlay, palette, save_label_png


def test_voc_palette_known_colours():
    pal = palette("voc")
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    # Published VOC colours: background, aeroplane, bicycle, bird, person, tvmonitor, void.
    assert tuple(pal[0]) == (0, 0, 0)
    assert tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[2]) == (0, 128, 0)
    assert tuple(pal[3]) == (128, 128, 0)
    assert tuple(pal[15]) == (192, 128, 128)
    assert tuple(pal[20]) == (0, 64, 128)
    assert tuple(pal[255]) == (224, 224, 192)
    assert len({tuple(c) for c in pal}) == 256  # all distinct


def test_cityscapes_palette():
    pal = palette("cityscapes")
    assert tuple(pal[0]) == (128, 64, 128)  # road
    assert tuple(pal[13]) == (0, 0, 142)  # car
    assert tuple(pal[18]) == (119, 11, 32)  # bicycle
    assert tuple(pal[255]) == (0, 0, 0)


def test_palette_int_and_errors():
    np.testing.assert_array_equal(palette(21), palette("voc"))
    with pytest.raises(ValueError, match="unknown palette"):
        palette("nope")
    with pytest.raises(ValueError, match="num_classes"):
        palette(0)
    with pytest.raises(TypeError):
        palette(1.5)


def test_colorize_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, size=(17, 23)).astype(np.int64)
    label[:3] = 255
    img = colorize(label)
    assert img.mode == "P" and img.size == (23, 17)
    path = save_label_png(tmp_path / "sub" / "a.png", label)
    back = Image.open(path)
    assert back.mode == "P"
    np.testing.assert_array_equal(np.array(back), label)
    rgb = np.array(back.convert("RGB"))
    np.testing.assert_array_equal(rgb, palette("voc")[label])


def test_colorize_accepts_torch_and_rejects_bad_values():
    t = torch.tensor([[0, 1], [2, 255]])
    np.testing.assert_array_equal(np.array(colorize(t)), t.numpy())
    with pytest.raises(ValueError, match=r"0\.\.255"):
        colorize(np.array([[0, 256]]))
    with pytest.raises(ValueError, match="2-D"):
        colorize(np.zeros((2, 2, 2), dtype=np.int64))
    with pytest.raises(TypeError):
        colorize(np.zeros((2, 2), dtype=np.float32))


def test_overlay_blends_and_keeps_void():
    img = np.full((2, 2, 3), 100, dtype=np.uint8)
    label = np.array([[0, 1], [255, 2]])
    out = overlay(img, label, alpha=0.5)
    pal = palette("voc").astype(np.float64)
    np.testing.assert_array_equal(out[0, 1], np.rint(0.5 * 100 + 0.5 * pal[1]).astype(np.uint8))
    np.testing.assert_array_equal(out[1, 0], img[1, 0])  # void keeps the photo
    np.testing.assert_array_equal(overlay(img, label, alpha=0.0), img)
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, label, alpha=2.0)


def test_plot_trimap_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from deepcrf.viz import plot_trimap

    res = {"trimap": {"1": {"miou": 0.5, "pixel_acc": 0.7}, "5": {"miou": 0.6, "pixel_acc": None}}}
    out = plot_trimap({"a": res, "b": res}, tmp_path / "t.png", title="x")
    assert out.is_file() and Image.open(out).size[0] > 100
    with pytest.raises(ValueError, match="trimap"):
        plot_trimap({"a": {}}, tmp_path / "u.png")
