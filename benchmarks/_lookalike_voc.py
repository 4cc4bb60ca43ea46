"""A second context-scene generator, unlike ``deepcrf.data.synthetic``: VOC-layout trees.

Scenes (default 96 x 128, not square) are split into two or three *stuff* regions by a
slanted straight line and, sometimes, a vertical one: 0 sand (yellow-beige, speckled),
1 snow (pale blue-white, smooth with faint streaks), 2 forest (dark green, blotchy). On them
lie 1-4 objects drawn by PIL as hexagons or diamonds of one appearance (purple with a white
dot pattern, +-25 levels of colour jitter): an object whose centre lies on snow is a
3 "sled", on sand a 4 "hut"; their pixels come from one distribution, only the region
around them tells the two classes apart. 5 "ball", an orange disc, is context free (any
region). Photos are JPEG (quality 85, 4:2:0 chroma subsampling), labels palette PNGs with a
void (255) band of ``void`` pixels over every object outline. Deterministic in (seed, index).
Used by ``contextual_ablation.py --generator lookalike`` to check the contextual recipe on
scenes it was not tuned on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from _voc_tree import write_voc_tree

CLASSES = ("sand", "snow", "forest", "sled", "hut", "ball")
SAND, SNOW, FOREST, SLED, HUT, BALL = range(6)


def _palette() -> list[int]:
    pal = [200, 180, 100, 220, 230, 250, 20, 90, 30, 120, 40, 160, 160, 60, 200, 250, 140, 20]
    pal += [0] * (3 * 256 - len(pal))
    pal[3 * 255 : 3 * 256] = [224, 224, 192]
    return pal


def _stuff(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kinds = rng.permutation([SAND, SNOW, FOREST])
    if rng.random() < 0.8:  # the look-alike pair needs sand and snow in most scenes
        kinds = np.array([SAND, SNOW, FOREST])[[*rng.permutation(2).tolist(), 2]]
    slope = rng.uniform(-0.5, 0.5)
    level = rng.uniform(0.35, 0.65) * h
    stuff = np.where(yy < level + slope * (xx - w / 2), kinds[0], kinds[1])
    if rng.random() < 0.4:
        x_split = rng.uniform(0.25, 0.75) * w
        side = xx > x_split if rng.random() < 0.5 else xx < x_split
        stuff = np.where(side & (yy > level), kinds[2], stuff)
    return stuff.astype(np.int64)


def _texture(rng: np.random.Generator, stuff: np.ndarray) -> np.ndarray:
    h, w = stuff.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    sand = np.array([rng.uniform(190, 220), rng.uniform(165, 195), rng.uniform(95, 130)])
    speck = rng.normal(0, 10, (h, w, 1)) * (rng.random((h, w, 1)) < 0.3)
    snow = np.array([rng.uniform(205, 230), rng.uniform(220, 240), rng.uniform(235, 252)])
    streak = 5 * np.sin(xx / rng.uniform(5, 11) + yy / 17)[..., None]
    forest = np.array([rng.uniform(20, 50), rng.uniform(70, 110), rng.uniform(25, 50)])
    blob = 15 * np.sin(xx / 3.1) * np.cos(yy / 2.7)
    layers = {SAND: sand + speck, SNOW: snow + streak, FOREST: forest + blob[..., None]}
    for kind, value in layers.items():
        m = stuff == kind
        img[m] = np.broadcast_to(value, (h, w, 3))[m]
    return img


def _outline(kind: int, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    if kind == BALL:
        n, radii = 32, [r] * 32
    elif rng_hex(angle):
        n, radii = 6, [r] * 6
    else:  # diamond, wider than tall
        n, radii = 4, [r, 0.6 * r, r, 0.6 * r]
    pts = []
    for i in range(n):
        a = angle + 2 * math.pi * i / n
        pts.append((cx + radii[i] * math.cos(a), cy + radii[i] * math.sin(a)))
    return pts


def rng_hex(angle: float) -> bool:
    """Hexagon or diamond, decided by the drawn angle (keeps one random stream)."""
    return math.sin(7 * angle) > 0


def scene(seed: int, index: int, size=(96, 128), void: int = 3):
    """(RGB uint8 (H, W, 3), label uint8 (H, W)) of scene ``index``."""
    rng = np.random.default_rng([seed, index, 11])
    h, w = size
    stuff = _stuff(rng, h, w)
    img = _texture(rng, stuff)
    photo = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    label = Image.fromarray(stuff.astype(np.uint8), mode="L")
    draw_img, draw_lab = ImageDraw.Draw(photo), ImageDraw.Draw(label)
    outlines = []
    for _ in range(int(rng.integers(1, 5))):
        r = float(rng.uniform(0.08, 0.22) * min(h, w))
        cx, cy = float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.1, 0.9) * h)
        under = int(stuff[int(cy), int(cx)])
        if rng.random() < 0.25:
            kind, colour = BALL, (250, int(rng.uniform(120, 160)), int(rng.uniform(0, 40)))
        elif under in (SAND, SNOW):
            kind = SLED if under == SNOW else HUT
            colour = tuple(int(np.clip(v + rng.uniform(-25, 25), 0, 255)) for v in (125, 45, 165))
        else:
            continue
        poly = _outline(kind, cx, cy, r, float(rng.uniform(0, math.pi)))
        draw_img.polygon(poly, fill=colour)
        draw_lab.polygon(poly, fill=kind)
        if kind != BALL:  # white dots on the look-alike objects
            for _ in range(int(r)):
                dx, dy = rng.uniform(-0.5, 0.5, 2) * r
                draw_img.ellipse([cx + dx - 1, cy + dy - 1, cx + dx + 1, cy + dy + 1],
                                 fill=(235, 235, 235))  # fmt: skip
        outlines.append(poly)
    if void > 0:
        for poly in outlines:
            draw_lab.line([*poly, poly[0]], fill=255, width=void)
    noisy = np.asarray(photo, np.float32) + rng.normal(0, 4, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8), np.asarray(label, np.uint8)


def write_tree(out: str | Path, n: int = 200, val: int = 40, seed: int = 0,
               size=(96, 128), void: int = 3) -> Path:  # fmt: skip
    """``out/VOCdevkit/VOC2012`` with ``n`` scenes, the last ``val`` of them in val.txt."""
    return write_voc_tree(out, scene, prefix="lookalike", classes=CLASSES, palette=_palette(),
                          n=n, val=val, seed=seed, size=size, void=void, quality=85)  # fmt: skip
