"""A second scene generator, unlike ``deepcrf.data.synthetic``: VOC-layout trees of shapes.

Scenes (default 120 x 160, not square) on a two-tone background (a sky/ground split at a
random height, each a random colour with a linear gradient and pixel noise) with 1-5
objects of four classes drawn by PIL: 1 triangle, 2 ring (annulus), 3 star, 4 cross. Each
class has its own hue family (orange, cyan, magenta, lime) with +-35 levels of jitter per
channel per object, as object classes in photos have typical but varying colours; objects
overlap in drawing order. Photos are JPEG (quality 80,
4:2:0 chroma subsampling: colour edges bleed), labels palette PNGs with a void (255) band
of ``void`` pixels drawn over every object outline, as in PASCAL VOC. Deterministic in
(seed, index). Used by ``train_results.py`` to check the recipes on scenes they were not
tuned on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _voc_tree import write_voc_tree

CLASSES = ("background", "triangle", "ring", "star", "cross")
CLASS_COLOURS = {1: (230, 130, 30), 2: (40, 200, 210), 3: (200, 50, 190), 4: (150, 220, 40)}


def _palette() -> list[int]:
    pal = [0, 0, 0, 200, 60, 60, 60, 200, 60, 60, 60, 200, 200, 200, 60]
    pal += [0] * (3 * 256 - len(pal))
    pal[3 * 255 : 3 * 256] = [224, 224, 192]
    return pal


def _polygon(kind: int, cx: float, cy: float, r: float, angle: float) -> list[list]:
    """Outline polygons (one or two) of a shape; a ring is (outer, inner)."""

    def poly(points):
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in points]

    if kind == 1:
        return [poly([(r * math.cos(a), r * math.sin(a)) for a in (-1.57, 0.52, 2.62)])]
    if kind == 2:
        circle = [(math.cos(2 * math.pi * t / 48), math.sin(2 * math.pi * t / 48)) for t in
                  range(48)]  # fmt: skip
        return [poly([(r * x, r * y) for x, y in circle]),
                poly([(0.55 * r * x, 0.55 * r * y) for x, y in circle])]  # fmt: skip
    if kind == 3:
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return [poly(pts)]
    w = 0.3 * r
    return [poly([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
                  (-w, w), (-r, w), (-r, -w), (-w, -w)])]  # fmt: skip


def scene(seed: int, index: int, size=(120, 160), void: int = 3):
    """(RGB uint8 (H, W, 3), label uint8 (H, W)) of scene ``index``."""
    rng = np.random.default_rng([seed, index, 7])
    h, w = size
    split = int(rng.uniform(0.3, 0.7) * h)
    img = np.empty((h, w, 3), np.float32)
    for rows in (slice(0, split), slice(split, h)):
        n = img[rows].shape[0]
        base = rng.uniform(30, 220, 3)
        ramp = np.linspace(-1, 1, n)[:, None, None] * rng.uniform(-25, 25, 3)
        img[rows] = base + ramp
    photo = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    label = Image.new("L", (w, h), 0)
    draw_img, draw_lab = ImageDraw.Draw(photo), ImageDraw.Draw(label)
    outlines = []
    for _ in range(int(rng.integers(1, 6))):
        kind = int(rng.integers(1, 5))
        r = float(rng.uniform(0.12, 0.3) * min(h, w))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        base = CLASS_COLOURS[kind]
        colour = tuple(int(np.clip(v + rng.uniform(-35, 35), 0, 255)) for v in base)
        polys = _polygon(kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        draw_img.polygon(polys[0], fill=colour)
        draw_lab.polygon(polys[0], fill=kind)
        if len(polys) == 2:  # the ring's hole shows what lies beneath: redraw it
            hole = Image.new("L", (w, h), 0)
            ImageDraw.Draw(hole).polygon(polys[1], fill=255)
            under = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            photo.paste(under, mask=hole)
            label.paste(0, mask=hole)
        outlines.extend(polys)
    if void > 0:
        for poly in outlines:
            draw_lab.line([*poly, poly[0]], fill=255, width=void)
    noisy = np.asarray(photo, np.float32) + rng.normal(0, 5, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), np.asarray(label, np.uint8)


def write_tree(out: str | Path, n: int = 150, val: int = 40, seed: int = 0,
               size=(120, 160), void: int = 3) -> Path:  # fmt: skip
    """``out/VOCdevkit/VOC2012`` with ``n`` scenes, the last ``val`` of them in val.txt."""
    return write_voc_tree(out, scene, prefix="shape", classes=CLASSES, palette=_palette(),
                          n=n, val=val, seed=seed, size=size, void=void, quality=80)  # fmt: skip
