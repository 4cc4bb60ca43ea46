"""The demo's comparison figure, drawn with Pillow alone (no plotting library needed).

Row 1: image | ground truth | CRF input | CRF output | what changed, with a box marking the
zoomed area. Row 2: the same five panels magnified on the boundary where the CRF corrected
most pixels. Row 3: a legend of class names and of the change colours, then optional notes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["CHANGE_COLOURS", "CLASS_COLOURS", "comparison_figure", "zoom_window"]

#: Colours of the synthetic classes (road, water, grass, car, boat, person, pole), chosen to
#: look like what they name; other indices cycle through them.
CLASS_COLOURS = np.array(
    [
        (128, 64, 128),  # road: Cityscapes' road purple
        (70, 130, 220),  # water
        (90, 160, 40),  # grass
        (20, 20, 150),  # car
        (0, 200, 200),  # boat
        (220, 20, 60),  # person
        (255, 220, 0),  # pole
    ],
    dtype=np.uint8,
)

#: Colours of the "what changed" panel.
CHANGE_COLOURS = {
    "corrected": (40, 200, 60),
    "broken": (230, 40, 40),
    "wrong to another wrong": (160, 60, 220),
}
_BACKGROUND, _INK, _BOX = (255, 255, 255), (20, 20, 20), (255, 230, 0)
_GAP, _MARGIN, _ZOOM = 8, 14, 4


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def zoom_window(changed: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """Top-left (y, x) of the ``size`` window holding the most ``True`` pixels of ``changed``."""
    h, w = changed.shape
    wh, ww = min(size[0], h), min(size[1], w)
    integral = np.pad(changed.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[wh:, ww:] - integral[:-wh, ww:] - integral[wh:, :-ww] + integral[:-wh, :-ww]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _change_map(image, gt, before, after) -> np.ndarray:
    grey = image.mean(axis=2, keepdims=True).repeat(3, axis=2)
    out = (0.35 * grey + 0.65 * 255).astype(np.uint8)  # a faded photo underneath
    changed = before != after
    kinds = {
        "corrected": changed & (after == gt),
        "broken": changed & (before == gt),
        "wrong to another wrong": changed & (before != gt) & (after != gt),
    }
    for name, mask in kinds.items():
        out[mask] = CHANGE_COLOURS[name]
    return out


def comparison_figure(
    image: np.ndarray,
    gt: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    scores: tuple[dict, dict],
    notes: tuple[str, ...] | list[str] = (),
) -> Image.Image:
    """The figure as an RGB image (see the module docstring for its layout); ``notes`` are
    lines of text printed under the legend."""
    h, w = gt.shape
    names = list(class_names)
    colours = CLASS_COLOURS[np.arange(256) % len(CLASS_COLOURS)]
    panels = [
        ("image", image),
        ("ground truth", colours[gt]),
        (f"before CRF: {_scores(scores[0])}", colours[before]),
        (f"after CRF: {_scores(scores[1])}", colours[after]),
        ("what the CRF changed", _change_map(image, gt, before, after)),
    ]
    zh, zw = h // _ZOOM, w // _ZOOM
    # Where the CRF corrected most, counting the thin structures it could not bring back too.
    interesting = (before != after) & (after == gt)
    if "pole" in names:
        interesting = interesting | ((gt == names.index("pole")) & (after != gt))
    zy, zx = zoom_window(interesting, (zh, zw))

    title_font, font = _font(20), _font(15)
    line = font.getbbox("Ag")[3] + 6
    title_h = title_font.getbbox("Ag")[3] + 14
    n = len(panels)
    legend_items = [("classes:", None)]
    legend_items += [(name, tuple(int(c) for c in colours[i])) for i, name in enumerate(names)]
    legend_items += [("   changed pixels:", None), *CHANGE_COLOURS.items()]
    width = 2 * _MARGIN + n * w + (n - 1) * _GAP
    legend_rows = _legend_rows(legend_items, font, width - 2 * _MARGIN)
    height = title_h + 2 * (line + h + _GAP) + (len(legend_rows) + len(notes)) * (line + 4)
    height += 2 * _MARGIN
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (_MARGIN, _MARGIN),
        "Dense CRF on a stride-8 network's output: the coarse labels snap to the image's edges",
        fill=_INK,
        font=title_font,
    )
    top = _MARGIN + title_h
    for row in range(2):
        for i, (caption, array) in enumerate(panels):
            x = _MARGIN + i * (w + _GAP)
            if row == 0:
                tile = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
                text = caption
            else:
                crop = np.ascontiguousarray(array[zy : zy + zh, zx : zx + zw], dtype=np.uint8)
                tile = Image.fromarray(crop).resize((zw * _ZOOM, zh * _ZOOM), Image.NEAREST)
                text = f"zoom x{_ZOOM}" if i == 0 else ""
            draw.text((x, top), text, fill=_INK, font=font)
            canvas.paste(tile, (x, top + line))
            if row == 0:
                draw.rectangle(
                    (x + zx - 1, top + line + zy - 1, x + zx + zw, top + line + zy + zh),
                    outline=_BOX,
                    width=2,
                )
        top += line + h + _GAP
    for items in legend_rows:
        x = _MARGIN
        for name, colour in items:
            if colour is None:  # a heading
                draw.text((x, top), name, fill=_INK, font=font)
                x += int(font.getlength(name)) + 10
                continue
            draw.rectangle((x, top + 2, x + line - 6, top + line - 4), fill=colour, outline=_INK)
            draw.text((x + line, top), name, fill=_INK, font=font)
            x += line + int(font.getlength(name)) + 22
        top += line + 4
    for note in notes:
        draw.text((_MARGIN, top), note, fill=_INK, font=font)
        top += line + 4
    return canvas


def _legend_rows(items, font, width: int) -> list[list]:
    rows: list[list] = [[]]
    used = 0
    for name, colour in items:
        need = 20 + int(font.getlength(name)) + 22
        if rows[-1] and used + need > width:
            rows.append([])
            used = 0
        rows[-1].append((name, colour))
        used += need
    return rows


def _scores(scores: dict) -> str:
    return f"accuracy {scores['pixel_acc']:.1%}, mIoU {scores['miou']:.1%}"
