"""A deterministic analyser of toy-world images: what shape, colours, position and size an image shows.

Robust to the blur and noise of generated images: pixels are classified against the palette (nearest
colour in RGB), the background is the commonest palette colour on the border, the shape is the largest
4-connected region that differs from the background, its colour the commonest palette colour inside it;
the region is then refined to the pixels nearer that colour than the background (the half-way contour of
a blurred edge), its position is the 3x3 grid cell of its box centre, and its class the shape template
(drawn to fill the same box, sharp or blurred) with the highest intersection-over-union.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from sdlab.toyworld.world import COLOURS, IMAGE_SIZE, POSITIONS, SHAPES, SIZES, Scene, shape_mask

MIN_AREA = 12
"""Smallest shape region in pixels (64x64 image) that counts as a shape."""

BLUR_SIGMA = 1.5
"""Gaussian blur (pixels, 64x64 image) of the soft shape templates that match blurry generated shapes."""

BACKGROUND_DISTANCE = 60.0
"""RGB distance (0..441) from the background colour beyond which a pixel is foreground."""


@dataclass(frozen=True)
class Analysis:
    """What an image shows; attributes are None where nothing could be found."""

    background: str
    colour: str | None
    shape: str | None
    position: str | None
    size: str | None
    shape_iou: float = 0.0


ATTRIBUTES: tuple[str, ...] = ("colour", "background", "shape", "position", "size")
"""Attribute names shared by Scene and Analysis."""


def _palette() -> tuple[tuple[str, ...], np.ndarray]:
    names = COLOURS.names()
    return names, np.array([COLOURS.get(n).rgb for n in names], dtype=np.float32)


def _labels(pixels: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each pixel of an (H, W, 3) float array."""
    _, pal = _palette()
    d = ((pixels[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (empty mask if none)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        region, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            region.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a boolean mask by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _grid_cell(v: float) -> int:
    return 0 if v < IMAGE_SIZE / 3 else (2 if v >= 2 * IMAGE_SIZE / 3 else 1)


def _position(col: int, row: int) -> str:
    return next(p.name for _, p in POSITIONS if p.col == col and p.row == row)


def _templates(name: str, box: tuple[float, float, float, float]) -> list[np.ndarray]:
    """Masks of shape ``name`` fitted to ``box``: sharp, and blurred (sigma BLUR_SIGMA) then cut at half
    height after drawing into the box grown by 0..2 px (a blurred tip is shorter than the sharp one)."""
    x0, y0, x1, y1 = box
    out = [shape_mask(name, box, (IMAGE_SIZE, IMAGE_SIZE))]
    for grow in (0.0, 1.0, 2.0):
        sharp = shape_mask(name, (x0 - grow, y0 - grow, x1 + grow, y1 + grow), (IMAGE_SIZE, IMAGE_SIZE))
        soft = Image.fromarray((sharp * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(BLUR_SIGMA))
        out.append(np.asarray(soft) >= 128)
    return out


def _best_shape(region: np.ndarray, box: tuple[float, float, float, float]) -> tuple[str, float]:
    scores = []
    for name in SHAPES.names():
        for tmpl in _templates(name, box):
            inter = np.logical_and(tmpl, region).sum()
            union = np.logical_or(tmpl, region).sum()
            scores.append((inter / max(union, 1), name))
    iou, name = max(scores)
    return name, float(iou)


def analyse(image: Image.Image) -> Analysis:
    """Classify a toy-world image (any size; it is resized to 64x64 first)."""
    img = image.convert("RGB")
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    px = np.asarray(img, dtype=np.float32)
    names, pal = _palette()
    labels = _labels(px)
    border = np.ones((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    border[2:-2, 2:-2] = False
    bg_idx = int(np.bincount(labels[border], minlength=len(names)).argmax())
    background = names[bg_idx]
    dist = np.sqrt(((px - pal[bg_idx]) ** 2).sum(-1))
    region = _largest_component((dist > BACKGROUND_DISTANCE) & (labels != bg_idx))
    area = int(region.sum())
    if area < MIN_AREA:
        return Analysis(background, None, None, None, None)
    counts = np.bincount(labels[region], minlength=len(names))
    counts[bg_idx] = 0
    fg_idx = int(counts.argmax())
    colour = names[fg_idx]
    nearer_fg = ((px - pal[fg_idx]) ** 2).sum(-1) < ((px - pal[bg_idx]) ** 2).sum(-1)
    refined = _largest_component(nearer_fg & _dilate(region))
    region = refined if refined.sum() >= MIN_AREA else region
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    box = (float(x0), float(y0), float(x1), float(y1))
    position = _position(_grid_cell((x0 + x1) / 2), _grid_cell((y0 + y1) / 2))
    side = max(x1 - x0, y1 - y0)
    small, large = SIZES.get("small").pixels, SIZES.get("large").pixels
    size = "small" if side < (small + large) / 2 else "large"
    shape, iou = _best_shape(region, box)
    return Analysis(background, colour, shape, position, size, iou)


def matches(scene: Scene, analysis: Analysis) -> dict[str, bool]:
    """Per-attribute agreement between what was asked (``scene``) and what was found."""
    return {a: getattr(scene, a) == getattr(analysis, a) for a in ATTRIBUTES}
