"""Emphasis augmentation for training the default model (``tools/train_default_model.py --emphasis-frac``).

A1111 emphasis, ``(red:w)``, multiplies the final hidden states of the word's tokens by ``w`` and rescales
the whole chunk to its old mean (``sdlab.prompt.encode_emphasis``, mode "Original"). A model trained only
on unweighted captions never sees such a conditioning, and a text encoder that copies the colour word
into every later token makes it nearly inert. This module teaches what the weight means:

* for a fraction of the captions, one colour word (the shape's or the background's) gets a weight ``w``
  drawn uniformly from [0, ``w_max``], applied to its tokens exactly as the Engine applies emphasis;
* the caption names the scene's true colour with probability ``g(w) = 1/K + (1 - 1/K) * min(w, 1)``
  (``K`` colours it could name), otherwise another colour, chosen uniformly. So, given the caption, the
  named colour is in the image with probability ``g(w)``: weight 0 tells nothing, weight 1 is certain,
  and weights above 1 say no more than 1 (the model learns no overshoot).

A substituted shape colour never forms a held-out colour+shape pair (the evaluator's generalisation set
stays unseen) and never equals the background colour; a substituted background never equals the shape
colour.

That "swap" target (phase 5) left the model's images unmoved by emphasis: at a fixed seed the sampler
picks one colour or another, and a weight only shifts odds. The "blend" target (``plan_blend``) makes the
weight a visible, deterministic property of the image instead: the caption always names the true colours,
and the emphasised region is drawn with its colour's *strength* ``s = min(w, 1)``, i.e. mixed with the
other region's colour as ``s * own + (1 - s) * other``. ``(red:0.6) circle`` is then a paler red circle,
``(red:0)`` one the colour of its background, and weights of 1 and above the plain scene.

Pure functions of their inputs and the given random generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from sdlab.toyworld import COLOURS, HELD_OUT_PAIRS, TRAIN_PHRASINGS, Scene, caption
from sdlab.toyworld.world import draw


@dataclass(frozen=True)
class Emphasis:
    """One caption's emphasised colour word and its weight (0..w_max)."""

    word: str
    weight: float
    attribute: str = ""
    """The emphasised region for a "blend" target: "colour" (the shape) or "background"; "" for "swap"."""


def truth_probability(weight: float, choices: int) -> float:
    """``g(w)``: probability (1/choices .. 1) that the caption names the true colour at weight ``weight``."""
    return 1.0 / choices + (1.0 - 1.0 / choices) * min(max(weight, 0.0), 1.0)


def _alternatives(scene: Scene, attribute: str) -> list[str]:
    """Colours the caption may name instead of the scene's ``attribute`` ("colour" or "background")."""
    if attribute == "colour":
        return [c for c in COLOURS.names()
                if c not in (scene.colour, scene.background) and (c, scene.shape) not in HELD_OUT_PAIRS]
    return [c for c in COLOURS.names() if c not in (scene.background, scene.colour)]


def plan_emphasis(scene: Scene, rng: np.random.Generator, w_max: float) -> tuple[Scene, Emphasis]:
    """The scene to caption (possibly with one colour swapped) and the emphasis to apply to it."""
    attribute = ("colour", "background")[int(rng.integers(2))]
    weight = float(rng.uniform(0.0, w_max))
    others = _alternatives(scene, attribute)
    named = getattr(scene, attribute)
    if others and rng.random() >= truth_probability(weight, len(others) + 1):
        named = others[int(rng.integers(len(others)))]
    return replace(scene, **{attribute: named}), Emphasis(named, weight)


def plan_blend(scene: Scene, rng: np.random.Generator, w_max: float) -> tuple[Scene, Emphasis]:
    """The scene (unchanged: its caption names the true colours) and the emphasis of one of its two
    colour words, ``weight`` uniform on [0, w_max]; the image is drawn by :func:`render_blend`."""
    attribute = ("colour", "background")[int(rng.integers(2))]
    weight = float(rng.uniform(0.0, w_max))
    return scene, Emphasis(getattr(scene, attribute), weight, attribute)


def blend_colours(scene: Scene, emphasis: Emphasis) -> tuple[np.ndarray, np.ndarray]:
    """(shape RGB, background RGB), float 0..255, with the emphasised region at strength min(w, 1)."""
    fg = np.asarray(COLOURS.get(scene.colour).rgb, dtype=np.float64)
    bg = np.asarray(COLOURS.get(scene.background).rgb, dtype=np.float64)
    s = min(max(emphasis.weight, 0.0), 1.0)
    if emphasis.attribute == "colour":
        return s * fg + (1.0 - s) * bg, bg
    if emphasis.attribute == "background":
        return fg, s * bg + (1.0 - s) * fg
    raise ValueError(f"a blend target needs attribute 'colour' or 'background', not {emphasis.attribute!r}")


def render_blend(scene: Scene, emphasis: Emphasis) -> np.ndarray:
    """(64, 64, 3) uint8 image of ``scene`` with its emphasised region blended (see :func:`blend_colours`);
    at weight >= 1 it equals ``sdlab.toyworld.render(scene)``."""
    return draw(scene, *blend_colours(scene, emphasis))


EMPHASIS_TARGETS = {"swap": plan_emphasis, "blend": plan_blend}
"""``--emphasis-target`` of tools/train_default_model.py: how a caption's emphasis is planned."""


def word_positions(ids: list[int], word_ids: list[int]) -> list[int]:
    """Indices in ``ids`` of every token of each occurrence of the token sequence ``word_ids``."""
    n, out = len(word_ids), []
    for i in range(len(ids) - n + 1):
        if ids[i : i + n] == word_ids:
            out.extend(range(i, i + n))
    return out


def multipliers(tok, ids: torch.Tensor, emphases: list[Emphasis | None]) -> torch.Tensor:
    """(B, 77) float32 per-token weights: ``weight`` on the emphasised word's tokens, 1 elsewhere."""
    m = torch.ones(ids.shape, dtype=torch.float32)
    for row, emphasis in enumerate(emphases):
        if emphasis is not None:
            positions = word_positions(ids[row].tolist(), tok.encode(emphasis.word))
            m[row, positions] = emphasis.weight
    return m


RATIO_LIMITS = (0.75, 4 / 3)
"""Training clamps the mean-restoring factor to this range. The text encoder's hidden states average
about 1e-4, so the factor is 0.98-1.04 for 90% of weighted captions but reached 4.1 in 512 (it scales the
whole conditioning): a rare sample that would only teach noise."""


def apply_emphasis(z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """A1111 "Original" emphasis on each caption of a batch on its own (as the Engine encodes one
    prompt): ``z * m`` rescaled to the caption's original mean, the factor clamped to RATIO_LIMITS and
    1 where it is not finite (a caption whose hidden states average exactly 0.0, about one in 7,000:
    the seventh phase's first run turned NaN at step 25,157 on one). ``z`` (B, 77, D), ``m`` (B, 77)."""
    mean0 = z.mean(dim=(1, 2), keepdim=True)
    weighted = z * m.unsqueeze(-1)
    ratio = mean0 / weighted.mean(dim=(1, 2), keepdim=True)  # 0/0 where a caption's mean is exactly 0.0
    return weighted * torch.where(ratio.isfinite(), ratio, torch.ones_like(ratio)).clamp(*RATIO_LIMITS)


def late_colour_swaps(scenes: list[Scene], captions: list[str], emphases: list[Emphasis | None], t: list[int],
                      below: int, frac: float, rng: np.random.Generator) -> list[str]:
    """``captions`` where each plain one (non-empty, no emphasis) trained at a timestep under ``below`` is,
    with probability ``frac`` (0..1), replaced by a caption of its scene naming another shape colour
    (never the background's, never a held-out pair; a trained phrasing drawn from ``rng``).

    ``--late-swap-frac`` of tools/train_default_model.py: at low noise the image already shows its colour,
    and a model that learns the caption's colour may then be wrong keeps the colour it sees. Without it the
    default model repaints the shape in the last ~3 of 20 sampling steps (``[red:blue:0.8]`` comes out blue),
    so prompt editing never lands between two colours. One ``rng`` draw per row, whatever its timestep.
    """
    out = list(captions)
    for k, (scene, text, emphasis, step) in enumerate(zip(scenes, captions, emphases, t, strict=True)):
        hit = rng.random() < frac
        if hit and text and emphasis is None and step < below and (others := _alternatives(scene, "colour")):
            swapped = replace(scene, colour=others[int(rng.integers(len(others)))])
            out[k] = caption(swapped, int(rng.integers(len(TRAIN_PHRASINGS))), rng)
    return out
