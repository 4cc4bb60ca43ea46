"""A third scene generator with other statistics than ``deepcrf.data.synthetic`` and
``_shapes_voc``: more classes, textured backgrounds, thin objects, a wide void band.

Scenes (default 112 x 144) on a textured background (one of: stripes at a random angle, a
checkerboard, or smooth blotchy noise; two random colours mixed by the texture) with 2-7
objects of seven classes: 1 disc, 2 square, 3 thin bar (6-10 px wide, long, any angle),
4 ellipse, 5 pie (a disc with a missing wedge), 6 hollow frame, 7 arc (8 px wide). Each class has
a base colour (shared in pairs of similar hue, so colour alone does not separate all
classes) with +-40 jitter per channel per object, and half the objects carry a texture of
their own. Objects overlap in drawing order. Photos are JPEG (quality 75), labels palette
PNGs with a void (255) band of ``void`` pixels (default 4) over every
object outline. Deterministic in (seed, index). Used by ``train_results.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _voc_tree import write_voc_tree

CLASSES = ("background", "disc", "square", "bar", "ellipse", "pie", "frame", "arc")
CLASS_COLOURS = {
    1: (210, 60, 50),
    2: (220, 90, 60),
    3: (40, 60, 200),
    4: (60, 170, 80),
    5: (80, 190, 90),
    6: (200, 200, 60),
    7: (60, 80, 220),
}


def _palette() -> list[int]:
    pal = []
    for k in range(256):
        pal += [(k * 97) % 256, (k * 57 + 80) % 256, (k * 31 + 160) % 256]
    pal[:3] = [0, 0, 0]
    pal[3 * 255 : 3 * 256] = [224, 224, 192]
    return pal


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A (h, w) mixing field in [0, 1]: stripes, checkerboard or blotchy noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 16)
        return 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle))
                                  / period)  # fmt: skip
    if kind == 1:
        cell = int(rng.integers(6, 14))
        return ((xx // cell + yy // cell) % 2).astype(np.float32)
    coarse = rng.uniform(0, 1, (h // 12 + 2, w // 12 + 2)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
    return np.clip(field, 0, 1)


def _shape(kind: int, rng: np.random.Generator, h: int, w: int):
    """(draw function(draw, fill), outline polygons) of one object."""
    s = min(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = float(rng.uniform(0.08, 0.25) * s)
    ang = float(rng.uniform(0, 2 * math.pi))

    def rot(points):
        c, si = math.cos(ang), math.sin(ang)
        return [(cx + c * x - si * y, cy + si * x + c * y) for x, y in points]

    def circle(rx, ry, a0=0.0, a1=2 * math.pi, n=40):
        return [(rx * math.cos(a0 + (a1 - a0) * t / n), ry * math.sin(a0 + (a1 - a0) * t / n))
                for t in range(n + 1)]  # fmt: skip

    if kind == 1:
        polys = [rot(circle(r, r))]
    elif kind == 2:
        polys = [rot([(-r, -r), (r, -r), (r, r), (-r, r)])]
    elif kind == 3:
        half, t = float(rng.uniform(0.3, 0.6) * s), float(rng.uniform(3.0, 5.0))
        polys = [rot([(-half, -t), (half, -t), (half, t), (-half, t)])]
    elif kind == 4:
        polys = [rot(circle(r, r * rng.uniform(0.35, 0.6)))]
    elif kind == 5:
        gap = rng.uniform(0.5, 1.5)
        polys = [rot([(0.0, 0.0), *circle(r, r, gap, 2 * math.pi)])]
    elif kind == 6:
        polys = [rot([(-r, -r), (r, -r), (r, r), (-r, r)]),
                 rot([(-0.6 * r, -0.6 * r), (0.6 * r, -0.6 * r), (0.6 * r, 0.6 * r),
                      (-0.6 * r, 0.6 * r)])]  # fmt: skip
    else:
        outer, inner = circle(r + 4, r + 4, 0, 3.5), circle(r - 4, r - 4, 0, 3.5)
        polys = [rot(outer + inner[::-1])]
    return polys


def scene(seed: int, index: int, size=(112, 144), void: int = 4):
    """(RGB uint8 (H, W, 3), label uint8 (H, W)) of scene ``index``."""
    rng = np.random.default_rng([seed, index, 11])
    h, w = size
    mix = _texture(rng, h, w)[..., None]
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    img = a * mix + b * (1 - mix)
    label = np.zeros((h, w), np.uint8)
    outlines = []
    for _ in range(int(rng.integers(2, 8))):
        kind = int(rng.integers(1, 8))
        polys = _shape(kind, rng, h, w)
        mask_img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask_img)
        draw.polygon(polys[0], fill=255)
        if len(polys) == 2:
            draw.polygon(polys[1], fill=0)
        mask = np.asarray(mask_img) > 0
        colour = np.clip(np.array(CLASS_COLOURS[kind]) + rng.uniform(-40, 40, 3), 0, 255)
        if rng.uniform() < 0.5:
            tex = _texture(rng, h, w)[..., None]
            fill = colour * (0.75 + 0.25 * tex)
        else:
            fill = np.broadcast_to(colour, (h, w, 3))
        img = np.where(mask[..., None], fill, img)
        label[mask] = kind
        outlines.extend(polys)
    if void > 0:
        lab_img = Image.fromarray(label)
        draw = ImageDraw.Draw(lab_img)
        for poly in outlines:
            draw.line([*poly, poly[0]], fill=255, width=void)
        label = np.asarray(lab_img, np.uint8)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def write_tree(out: str | Path, n: int = 150, val: int = 40, seed: int = 0,
               size=(112, 144), void: int = 4) -> Path:  # fmt: skip
    """``out/VOCdevkit/VOC2012`` with ``n`` scenes, the last ``val`` of them in val.txt."""
    return write_voc_tree(out, scene, prefix="tex", classes=CLASSES, palette=_palette(),
                          n=n, val=val, seed=seed, size=size, void=void, quality=75)  # fmt: skip
