"""Procedural scenes that make CNN + CRF behaviour measurable on a CPU.

Each scene is a few textured *stuff* regions (road, water, grass) split by wavy boundaries,
with objects on top and thin poles over everything:

- ``car`` and ``boat`` are drawn from one and the same appearance (colour distribution, shape,
  stripe texture): a vehicle whose centre lies on road is a car, on water a boat. Only context
  tells them apart (what contextual pairwise potentials exploit).
- ``person``: a context-free object class (tall ellipse + head), anywhere.
- objects come at several scales (radius log-uniform over 4-35 % of the short side); their
  label boundaries are exactly the colour edges before blur (what the bilateral kernel uses).
- ``pole``: straight 1-2 px wide segments, which a stride-8 network blurs away.
- every image gets a small blur and Gaussian noise; labels stay crisp.
- ``void_band > 0`` marks pixels within that width around vehicle/person outlines as 255,
  like PASCAL VOC's void band (poles are never voided), so trimap evaluation has a void rule.

Classes (:data:`~deepcrf.data.classes.SYNTHETIC_CLASSES`): 0 road, 1 water, 2 grass, 3 car,
4 boat, 5 person, 6 pole. ``num_classes`` < 7 keeps the first ``num_classes`` classes and does
not draw the others (3: stuff only, 5: + the context pair, 6: + person).
Scenes are deterministic functions of ``(seed, index)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ..viz import save_label_png
from .classes import SYNTHETIC_CLASSES
from .transforms import normalize as normalize_image

__all__ = ["SyntheticScenes", "write_voc_tree"]

ROAD, WATER, GRASS, CAR, BOAT, PERSON, POLE = range(7)
IGNORE = 255


class SyntheticScenes(Dataset):
    """``n`` procedural scenes of ``size`` = (H, W); samples as in the other datasets."""

    classes = SYNTHETIC_CLASSES

    def __init__(
        self,
        n: int,
        size: tuple[int, int] = (128, 128),
        num_classes: int = len(SYNTHETIC_CLASSES),
        seed: int = 0,
        transform: Callable | None = None,
        normalize: str | None = "imagenet",
        noise: float = 6.0,
        max_objects: int = 5,
        max_poles: int = 3,
        void_band: int = 0,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive number of scenes, got {n!r}")
        h, w = size
        if h < 16 or w < 16:
            raise ValueError(f"size: scenes need at least 16x16 pixels, got {size}")
        if not 3 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(
                f"num_classes: expected 3..{len(SYNTHETIC_CLASSES)}, got {num_classes}"
            )
        if void_band < 0:
            raise ValueError(f"void_band: expected >= 0, got {void_band}")
        self.n, self.size, self.num_classes, self.seed = n, (int(h), int(w)), num_classes, seed
        self.transform, self.normalize = transform, normalize
        self.noise, self.max_objects, self.max_poles = noise, max_objects, max_poles
        self.void_band = void_band
        self.epoch = 0
        self._yy, self._xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def name(self, index: int) -> str:
        return f"synth_{self.seed}_{index:06d}"

    # --- scene generation -------------------------------------------------------------
    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(raw uint8 (H, W, 3), label int64 (H, W)) of scene ``index``; deterministic."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        rng = np.random.default_rng([self.seed, index])
        stuff = self._stuff_layout(rng)
        img = self._stuff_texture(rng, stuff)
        label = stuff.copy()
        if self.num_classes > GRASS + 1:
            self._draw_objects(rng, img, label, stuff)
        if self.num_classes > POLE:
            self._draw_poles(rng, img, label)
        if self.void_band > 0:
            self._void_band(label)
        img = self._blur(img)
        img += rng.normal(0.0, self.noise, img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8), label

    def _stuff_layout(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.size
        yy, xx = self._yy, self._xx
        kinds = rng.permutation([ROAD, WATER, GRASS])
        amp = rng.uniform(0.02, 0.08) * h
        period = rng.uniform(0.4, 1.2) * w
        level = rng.uniform(0.3, 0.6) * h
        y_split = level + amp * np.sin(2 * np.pi * xx / period + rng.uniform(0, 6.3))
        stuff = np.where(yy < y_split, kinds[0], kinds[1]).astype(np.int64)
        if rng.random() < 0.5:  # a third region on one side of the lower part
            x_amp = rng.uniform(0.02, 0.06) * w
            x_split = rng.uniform(0.3, 0.7) * w + x_amp * np.sin(2 * np.pi * yy / (0.7 * h))
            stuff[(yy >= y_split) & (xx > x_split)] = kinds[2]
        return stuff

    def _stuff_texture(self, rng: np.random.Generator, stuff: np.ndarray) -> np.ndarray:
        h, w = self.size
        yy, xx = self._yy, self._xx
        img = np.empty((h, w, 3), dtype=np.float32)
        for kind in np.unique(stuff):
            m = stuff == kind
            ys, xs = yy[m], xx[m]
            if kind == ROAD:  # grey asphalt, fine grain
                base = np.full(3, rng.uniform(95, 130), dtype=np.float32)
                tex = rng.normal(0, 9, ys.shape).astype(np.float32)[:, None]
            elif kind == WATER:  # blue with waves
                base = np.array([rng.uniform(25, 55), rng.uniform(70, 105), rng.uniform(150, 195)])
                lam = rng.uniform(4, 9)
                wave = np.sin(2 * np.pi * ys / lam + 0.8 * np.sin(xs / rng.uniform(6, 14)))
                tex = (14 * wave).astype(np.float32)[:, None]
            else:  # grass: green with vertical blades
                base = np.array([rng.uniform(45, 80), rng.uniform(120, 160), rng.uniform(25, 55)])
                col = rng.normal(0, 14, w).astype(np.float32)
                tex = (col[xs.astype(np.int64)] + rng.normal(0, 6, ys.shape))[:, None]
            img[m] = base.astype(np.float32) + tex
        return img

    def _window(self, cy: float, cx: float, ry: float, rx: float):
        """Slices of the box [cy - ry, cy + ry] x [cx - rx, cx + rx] clipped to the image."""
        h, w = self.size
        y0, y1 = max(0, int(np.floor(cy - ry))), min(h, int(np.ceil(cy + ry)) + 1)
        x0, x1 = max(0, int(np.floor(cx - rx))), min(w, int(np.ceil(cx + rx)) + 1)
        return np.s_[y0 : max(y0, y1), x0 : max(x0, x1)]

    def _shape_mask(self, rng: np.random.Generator, kind: int, cy: float, cx: float, r: float):
        """(window, mask inside the window) of one object; work only in its bounding box."""
        if kind == PERSON:  # tall body plus a head
            win = self._window(cy, cx, 1.2 * r + 1, 0.4 * r + 1)
            yy, xx = self._yy[win] - cy, self._xx[win] - cx
            body = (xx / (0.4 * r)) ** 2 + ((yy - 0.3 * r) / (0.9 * r)) ** 2 <= 1
            head = xx**2 + (yy + 0.85 * r) ** 2 <= (0.3 * r) ** 2
            return win, body | head
        win = self._window(cy, cx, r + 1, r + 1)
        yy, xx = self._yy[win] - cy, self._xx[win] - cx
        ang = rng.uniform(-0.35, 0.35)  # vehicle: rotated rounded rectangle, wider than tall
        c, s = np.cos(ang), np.sin(ang)
        u, v = c * xx + s * yy, -s * xx + c * yy
        a, b = r, r / rng.uniform(1.6, 2.6)
        u2, v2 = (u / a) ** 2, (v / b) ** 2
        return win, (u2 * u2 + v2 * v2) <= 1

    def _draw_objects(self, rng, img: np.ndarray, label: np.ndarray, stuff: np.ndarray) -> None:
        h, w = self.size
        short = min(h, w)
        count = int(rng.integers(1, self.max_objects + 1))
        radii = np.sort(short * np.exp(rng.uniform(np.log(0.04), np.log(0.35), count)))[::-1]
        vehicle_stuff = np.isin(stuff, [ROAD, WATER])
        vy, vx = np.nonzero(vehicle_stuff)
        for r in radii:
            r = max(float(r), 3.0)
            want_person = self.num_classes > PERSON and (rng.random() < 0.35 or len(vy) == 0)
            if want_person:
                kind, cls = PERSON, PERSON
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            elif len(vy):
                k = int(rng.integers(len(vy)))
                cy, cx = float(vy[k]), float(vx[k])
                kind = CAR
                cls = CAR if stuff[int(cy), int(cx)] == ROAD else BOAT
            else:
                continue
            win, mask = self._shape_mask(rng, kind, cy, cx, r)
            if not mask.any():
                continue
            ys, xs = self._yy[win][mask], self._xx[win][mask]
            if kind == PERSON:
                colour = np.array(
                    [rng.uniform(225, 255), rng.uniform(190, 230), rng.uniform(40, 90)]
                )
                shade = 12 * (ys - cy) / r
                img[win][mask] = colour.astype(np.float32) + shade[:, None].astype(np.float32)
            else:  # one appearance for car and boat: red body, diagonal stripes
                colour = np.array([rng.uniform(170, 225), rng.uniform(25, 70), rng.uniform(25, 70)])
                stripes = 18 * np.sign(np.sin((xs + ys) / 2.5))
                img[win][mask] = colour.astype(np.float32) + stripes[:, None].astype(np.float32)
            label[win][mask] = cls

    def _draw_poles(self, rng, img: np.ndarray, label: np.ndarray) -> None:
        h, w = self.size
        for _ in range(int(rng.integers(0, self.max_poles + 1))):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            length = rng.uniform(0.3, 0.8) * h
            ang = np.pi / 2 + rng.uniform(-0.3, 0.3)
            x1, y1 = x0 + length * np.cos(ang), y0 - length * np.sin(ang)
            half = rng.choice([0.5, 0.75, 1.0])  # widths 1-2 px
            dx, dy = x1 - x0, y1 - y0
            win = self._window(
                (y0 + y1) / 2, (x0 + x1) / 2, abs(dy) / 2 + half + 1, abs(dx) / 2 + half + 1
            )
            yy, xx = self._yy[win], self._xx[win]
            t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
            d2 = (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2
            mask = d2 <= half * half
            if not mask.any():
                continue
            img[win][mask] = rng.choice([rng.uniform(15, 40), rng.uniform(225, 250)])
            label[win][mask] = POLE

    def _void_band(self, label: np.ndarray) -> None:
        obj = np.isin(label, [CAR, BOAT, PERSON])
        edge = np.zeros_like(obj)
        edge[1:] |= obj[1:] != obj[:-1]
        edge[:-1] |= obj[1:] != obj[:-1]
        edge[:, 1:] |= obj[:, 1:] != obj[:, :-1]
        edge[:, :-1] |= obj[:, 1:] != obj[:, :-1]
        # the band: within (void_band - 1) / 2 (Chebyshev) of an outline pixel
        grow = (self.void_band - 1) // 2
        band = edge.copy()
        for _ in range(grow):
            g = band.copy()
            g[1:] |= band[:-1]
            g[:-1] |= band[1:]
            g[:, 1:] |= band[:, :-1]
            g[:, :-1] |= band[:, 1:]
            band = g
        label[band & (label != POLE)] = IGNORE

    @staticmethod
    def _blur(img: np.ndarray) -> np.ndarray:
        """Separable [1, 2, 1] / 4 blur with edge replication."""
        p = np.pad(img, ((1, 1), (0, 0), (0, 0)), mode="edge")
        img = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
        p = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
        return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4

    # --- dataset protocol ---------------------------------------------------------------
    def __getitem__(self, index: int) -> dict:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        index %= self.n
        raw, label = self.generate(index)
        sample = {"raw_image": raw, "label": label, "name": self.name(index)}
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            sample = self.transform(sample, rng)
        raw = np.ascontiguousarray(sample["raw_image"])
        sample["raw_image"] = torch.from_numpy(raw)
        sample["image"] = normalize_image(raw, self.normalize)
        sample["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"])).long()
        return sample


def write_voc_tree(scenes: SyntheticScenes, out_dir: str | Path, val_fraction: float = 0.2) -> Path:
    """Write scenes as ``out_dir/VOCdevkit/VOC2012`` (JPEG quality 95, palette-PNG labels,
    ``ImageSets/Segmentation/{train,val,trainval}.txt``, ``classes.txt``); returns VOC2012.

    The last ``round(n * val_fraction)`` scenes form ``val``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    voc = Path(out_dir) / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    names = []
    for i in tqdm(range(len(scenes)), desc="synthetic scenes", unit="img"):
        raw, label = scenes.generate(i)
        name = scenes.name(i)
        Image.fromarray(raw).save(voc / "JPEGImages" / f"{name}.jpg", quality=95, subsampling=0)
        save_label_png(voc / "SegmentationClass" / f"{name}.png", label, "voc")
        names.append(name)
    n_val = round(len(names) * val_fraction)
    train, val = names[: len(names) - n_val], names[len(names) - n_val :]
    for split, items in (("train", train), ("val", val), ("trainval", names)):
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in items))
    classes = SYNTHETIC_CLASSES[: scenes.num_classes]
    (voc / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return voc
