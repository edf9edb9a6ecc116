"""A deterministic, procedurally drawn world of captioned images for the bundled default model.

Each scene is one filled shape of one colour on a plain background of another colour, at one of nine
positions and in one of two sizes. Images are 64x64 RGB (uint8 0..255); captions are plain English in
several phrasings, and every phrasing names all five attributes (shape, shape colour, background colour,
size, position). Some colour+shape pairs are held out of training to test generalisation.

Everything here is pure: a scene is a frozen dataclass, drawing and captioning are functions of the
scene (and of an explicit ``numpy.random.Generator`` where a choice is random).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import cos, pi, sin

import numpy as np
from PIL import Image, ImageDraw

from sdlab.registry import Registry

IMAGE_SIZE = 64
"""Side of the world's images in pixels."""

MARGIN = 3.0
"""Distance in pixels from the image edge to the box of a shape at an edge position."""

JITTER = 1.5
"""Largest random offset of a shape's centre in pixels (each axis)."""


@dataclass(frozen=True)
class Colour:
    """A named palette colour; ``rgb`` channels are 0..255."""

    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Shape:
    """A shape kind: a polygon in the unit square (x right, y down) or, if ``ellipse``, a disc."""

    name: str
    polygon: tuple[tuple[float, float], ...] = ()
    ellipse: bool = False


@dataclass(frozen=True)
class Position:
    """One of nine positions: ``col`` and ``row`` in 0..2 (left/centre/right, top/middle/bottom)."""

    name: str
    col: int
    row: int
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class Size:
    """A size class: the side of the shape's box in pixels (64x64 image) and its words."""

    name: str
    pixels: float
    words: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """One drawable, captionable scene. ``dx``/``dy``/``dsize`` are small pixel offsets (jitter)."""

    shape: str
    colour: str
    background: str
    position: str
    size: str
    dx: float = 0.0
    dy: float = 0.0
    dsize: float = 0.0


def _star(points: int = 5, inner: float = 0.45) -> tuple[tuple[float, float], ...]:
    """A star with its apex up, rescaled to fill the unit square."""
    pts = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -pi / 2 + i * pi / points
        pts.append((r * cos(a), r * sin(a)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return tuple(((x - x0) / w, (y - y0) / h) for x, y in pts)


COLOURS: Registry[Colour] = Registry.of(
    "colour",
    (
        (c.name, c)
        for c in (
            Colour("red", (220, 30, 30)),
            Colour("orange", (255, 140, 0)),
            Colour("yellow", (245, 225, 30)),
            Colour("green", (30, 170, 40)),
            Colour("cyan", (40, 220, 230)),
            Colour("blue", (30, 60, 220)),
            Colour("purple", (120, 20, 160)),
            Colour("magenta", (235, 40, 200)),
            Colour("white", (245, 245, 245)),
            Colour("black", (15, 15, 15)),
        )
    ),
)

SHAPES: Registry[Shape] = Registry.of(
    "shape",
    (
        (s.name, s)
        for s in (
            Shape("circle", ellipse=True),
            Shape("square", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))),
            Shape("triangle", ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0))),
            Shape("diamond", ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5))),
            Shape("star", _star()),
        )
    ),
)

POSITIONS: Registry[Position] = Registry.of(
    "position",
    (
        (p.name, p)
        for p in (
            Position("top left", 0, 0, ("at the top left", "in the top left corner")),
            Position("top", 1, 0, ("at the top", "at the top centre")),
            Position("top right", 2, 0, ("at the top right", "in the top right corner")),
            Position("left", 0, 1, ("on the left", "at the left")),
            Position("centre", 1, 1, ("in the centre", "in the middle")),
            Position("right", 2, 1, ("on the right", "at the right")),
            Position("bottom left", 0, 2, ("at the bottom left", "in the bottom left corner")),
            Position("bottom", 1, 2, ("at the bottom", "at the bottom centre")),
            Position("bottom right", 2, 2, ("at the bottom right", "in the bottom right corner")),
        )
    ),
)

SIZES: Registry[Size] = Registry.of(
    "size",
    ((s.name, s) for s in (Size("small", 16.0, ("small", "little")), Size("large", 26.0, ("large", "big")))),
)

HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("yellow", "circle"),
        ("green", "triangle"),
        ("cyan", "square"),
        ("purple", "diamond"),
        ("white", "star"),
    }
)
"""(shape colour, shape) pairs never drawn by the training sampler."""

TRAIN_PHRASINGS: tuple[str, ...] = (
    "{a} {size} {colour} {shape} {where} on {abg} {bg} background",
    "{bg} background, {size} {colour} {shape} {where}",
    "{a} {colour} {shape} on {abg} {bg} background, {size}, {where}",
    "{size} {colour} {shape} {where}, {bg} background",
    "a picture of {a} {size} {colour} {shape} {where}, the background is {bg}",
    "{a} {size} {colour} {shape} on {bg}, {where}",
)
"""Caption templates used in training. ``{a}``/``{abg}`` are articles agreeing with the next word."""

HELD_OUT_PHRASINGS: tuple[str, ...] = (
    "an image with {abg} {bg} background and {a} {size} {colour} {shape} {where}",
    "{where}, there is {a} {colour} {shape}, {size}, on a plain {bg} background",
)
"""Caption templates never used in training (for the evaluator)."""

PHRASINGS: tuple[str, ...] = TRAIN_PHRASINGS + HELD_OUT_PHRASINGS

SUBJECT_CLAUSES: tuple[tuple[str, ...], ...] = (
    ("{a} {size} {colour} {shape}",),
    ("{size} {colour} {shape}",),
    ("{a} {colour} {shape}", "{size}"),
)
"""Training-only subject clauses for :func:`clause_caption` (a lone ``{size}`` is its own clause)."""

BACKGROUND_CLAUSES: tuple[str, ...] = ("{bg} background", "on {abg} {bg} background", "the background is {bg}")
"""Training-only background clauses for :func:`clause_caption`."""


def scene_box(scene: Scene) -> tuple[float, float, float, float]:
    """The shape's box ``(x0, y0, x1, y1)`` in pixels of the 64x64 image."""
    side = SIZES.get(scene.size).pixels + scene.dsize
    pos = POSITIONS.get(scene.position)
    lo, hi = MARGIN + side / 2, IMAGE_SIZE - MARGIN - side / 2
    cx = (lo, IMAGE_SIZE / 2, hi)[pos.col] + scene.dx
    cy = (lo, IMAGE_SIZE / 2, hi)[pos.row] + scene.dy
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def shape_mask(shape: str, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Boolean mask (H, W) of ``shape`` drawn to fill ``box`` (pixels, x0 y0 x1 y1) on a W x H canvas."""
    kind = SHAPES.get(shape)
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    if kind.ellipse:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    else:
        w, h = x1 - x0 - 1, y1 - y0 - 1
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in kind.polygon], fill=255)
    return np.asarray(img) > 127


def draw(scene: Scene, fg: np.ndarray | tuple[float, ...], bg: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """(64, 64, 3) uint8 pixels of ``scene``'s shape in RGB ``fg`` on RGB ``bg`` (0..255, rounded), whatever
    colours the scene names: the one drawing rule behind :func:`render` and the training tools' variants."""
    mask = shape_mask(scene.shape, scene_box(scene), (IMAGE_SIZE, IMAGE_SIZE))
    fg_px, bg_px = (np.rint(np.asarray(c, np.float64)) for c in (fg, bg))
    return np.where(mask[..., None], fg_px, bg_px).astype(np.uint8)


def render(scene: Scene) -> Image.Image:
    """Draw ``scene`` as a 64x64 RGB image."""
    return Image.fromarray(draw(scene, COLOURS.get(scene.colour).rgb, COLOURS.get(scene.background).rgb), "RGB")


def article(word: str) -> str:
    """The indefinite article ("a" / "an") before ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def _a_article(template: str, size_word: str, colour: str) -> str:
    """The article for ``{a}`` in ``template``, agreeing with the size or colour word after it ("a" if none)."""
    if "{a}" not in template:
        return "a"
    after = template.split("{a}", 1)[1].split()[0].strip(",")
    return article({"{size}": size_word, "{colour}": colour}[after])


def caption(scene: Scene, phrasing: int, rng: np.random.Generator | None = None) -> str:
    """The caption of ``scene`` in phrasing ``phrasing`` (index into PHRASINGS).

    ``rng`` picks among synonyms of the size and position words; without it the first is used.
    """
    size = SIZES.get(scene.size).words
    where = POSITIONS.get(scene.position).phrases
    pick = (lambda n: int(rng.integers(n))) if rng is not None else (lambda n: 0)
    size_word, where_phrase = size[pick(len(size))], where[pick(len(where))]
    template = PHRASINGS[phrasing]
    text = template.format(
        a=_a_article(template, size_word, scene.colour), size=size_word, colour=scene.colour, shape=scene.shape, where=where_phrase,
        bg=scene.background, abg=article(scene.background),
    )
    return text[0].upper() + text[1:] if text.startswith(("at ", "in ", "on ")) else text


def clause_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption of ``scene`` whose clauses (subject, size, position, background) come in a
    random order, joined by commas or spaces, so word order alone cannot tell the shape colour from the
    background. The shape colour always directly precedes the shape word (:func:`parse_caption` holds).
    """
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    size_word, where = pick(SIZES.get(scene.size).words), pick(POSITIONS.get(scene.position).phrases)
    subject = pick(SUBJECT_CLAUSES)
    fields = dict(a=_a_article(subject[0], size_word, scene.colour), size=size_word, colour=scene.colour, shape=scene.shape,
                  bg=scene.background, abg=article(scene.background))
    clauses = [c.format(**fields) for c in (*subject, pick(BACKGROUND_CLAUSES))] + [where]
    order = rng.permutation(len(clauses))
    return pick((", ", ", ", " ")).join(clauses[int(i)] for i in order)


def parse_caption(text: str) -> Scene:
    """Recover the attributes a caption names (the inverse of :func:`caption`; no jitter).

    The shape colour is the colour word closest before the shape word; the background is the other.
    Raises ValueError if an attribute is missing or ambiguous.
    """
    words = re.findall(r"[a-z]+", text.lower())
    shapes = [i for i, w in enumerate(words) if w in SHAPES]
    colours = [i for i, w in enumerate(words) if w in COLOURS]
    if len(shapes) != 1 or len(colours) != 2:
        raise ValueError(f"caption needs one shape and two colours: {text!r}")
    before = [i for i in colours if i < shapes[0]]
    if not before:
        raise ValueError(f"no colour before the shape word: {text!r}")
    colour = words[before[-1]]
    background = next(words[i] for i in colours if i != before[-1])
    sizes = {s.name for _, s in SIZES for w in words if w in s.words}
    joined = " ".join(words)
    spans = [(len(ph), p.name) for _, p in POSITIONS for ph in p.phrases if re.search(rf"\b{ph}\b", joined)]
    if len(sizes) != 1 or not spans:
        raise ValueError(f"caption needs one size and a position: {text!r}")
    return Scene(words[shapes[0]], colour, background, max(spans)[1], sizes.pop())


def random_scene(rng: np.random.Generator, *, allow_held_out: bool = False) -> Scene:
    """A uniformly random scene (background differs from the shape colour) with jitter.

    Unless ``allow_held_out``, colour+shape pairs in HELD_OUT_PAIRS are never returned.
    """
    colours, shapes = COLOURS.names(), SHAPES.names()
    while True:
        colour = colours[int(rng.integers(len(colours)))]
        shape = shapes[int(rng.integers(len(shapes)))]
        if allow_held_out or (colour, shape) not in HELD_OUT_PAIRS:
            break
    backgrounds = [c for c in colours if c != colour]
    return Scene(
        shape=shape,
        colour=colour,
        background=backgrounds[int(rng.integers(len(backgrounds)))],
        position=POSITIONS.names()[int(rng.integers(len(POSITIONS)))],
        size=SIZES.names()[int(rng.integers(len(SIZES)))],
        dx=float(rng.uniform(-JITTER, JITTER)),
        dy=float(rng.uniform(-JITTER, JITTER)),
        dsize=float(rng.uniform(-1.0, 1.0)),
    )


def training_sample(seed: int) -> tuple[Image.Image, str, Scene]:
    """The training sample for ``seed`` (>= 0): image, caption (a TRAIN_PHRASING) and scene."""
    rng = np.random.default_rng([seed, 0x70F])
    scene = random_scene(rng)
    text = caption(scene, int(rng.integers(len(TRAIN_PHRASINGS))), rng)
    return render(scene), text, scene
