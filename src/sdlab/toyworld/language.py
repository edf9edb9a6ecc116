"""Free-form training captions: the toy world's facts in varied English (training only).

The templated captions (world.TRAIN_PHRASINGS, world.clause_caption) use about 40 distinct words, so a
model trained on them reads an unseen frame ("a picture ... featuring ...", "background: red") as noise.
:func:`free_caption` says the same five facts in many surface forms: frames and verbs around the
subject, the shape colour before or after the shape word ("a red circle", "a circle in red"), the
background colour before or after its noun ("red background", "background: red"), position phrases with
verbs, sizes as their own clause, optional filler words and varied punctuation. No brackets: the Engine
reads them as emphasis.

Kept out on purpose, so that the evaluation's held-out phrasings and the independent phrasings of
benchmarks/eval_default_model.py still measure forms the model never saw: their words
(:data:`RESERVED_WORDS`) and their background forms "background {bg}" and "background: {bg}".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from sdlab.toyworld.world import POSITIONS, SIZES, Scene, article

RESERVED_WORDS: frozenset[str] = frozenset(
    {"image", "with", "and", "there", "plain",  # world.HELD_OUT_PHRASINGS
     "draw", "make", "placed", "against", "object", "coloured", "colored"}  # the independent phrasings
)
"""Words no free caption uses."""

_SUBJECTS: tuple[str, ...] = (
    "{a} {colour} {shape}", "{colour} {shape}", "{a} {shape} in {colour}", "{a} {shape}, {colour}",
    "one {colour} {shape}", "a single {colour} {shape}", "the {colour} {shape}",
)
_SIZED_SUBJECTS: tuple[str, ...] = (
    "{a} {size} {colour} {shape}", "{size} {colour} {shape}", "the {size} {colour} {shape}",
    "{a} {size} {shape} in {colour}", "one {size} {colour} {shape}",
)
_SIZE_CLAUSES: tuple[str, ...] = ("{size}", "{size} size", "size {size}", "it is {size}", "quite {size}")
_BACKGROUNDS: tuple[str, ...] = (
    "{bg} background", "on {abg} {bg} background", "the background is {bg}", "{bg} backdrop", "on {bg}",
    "over {abg} {bg} background", "in front of {abg} {bg} background",
    "the background colour is {bg}", "background in {bg}", "all {bg} behind it", "on a solid {bg} background",
    "set on {bg}",
)
_POSITION_VERBS: tuple[str, ...] = ("", "", "", "positioned ", "located ", "sitting ", "shown ", "drawn ")
_FRAMES: tuple[str, ...] = (
    "{x}", "{x}", "{x}", "a picture of {x}", "a drawing of {x}", "a photo of {x}", "an illustration of {x}",
    "show {x}", "paint {x}", "render {x}", "picture: {x}", "{x}.", "here: {x}", "a simple scene, {x}",
)
_FILLERS: tuple[str, ...] = (
    "simple", "flat", "clean", "minimal", "vector art", "digital art", "high quality", "sharp", "tiny world",
    "toy", "shape", "graphic", "icon", "scene", "please", "nice", "bright", "clear", "solid colours", "sketch",
)
_JOINERS: tuple[str, ...] = (", ", ", ", ", ", " ", "; ", ". ", " - ")


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _fill(template: str, fields: dict[str, str]) -> str:
    """``template`` with its fields, each ``{a}`` / ``{abg}`` an article agreeing with the word after it."""
    text = template.format(**{**fields, "a": "{a}", "abg": "{a}"})
    return re.sub(r"\{a\} (\w)", lambda m: f"{article(m.group(1))} {m.group(1)}", text)


def free_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of ``scene`` in a randomly drawn free form (see the module docstring); names the shape,
    both colours, the size and the position, and never uses a word of RESERVED_WORDS."""
    fields = {"colour": scene.colour, "shape": scene.shape, "bg": scene.background,
              "size": _pick(rng, SIZES.get(scene.size).words)}
    if rng.random() < 0.5:
        subject, rest = _fill(_pick(rng, _SIZED_SUBJECTS), fields), []
    else:
        subject, rest = _fill(_pick(rng, _SUBJECTS), fields), [_fill(_pick(rng, _SIZE_CLAUSES), fields)]
    rest.append(_pick(rng, _POSITION_VERBS) + _pick(rng, POSITIONS.get(scene.position).phrases))
    rest.append(_fill(_pick(rng, _BACKGROUNDS), fields))
    if rng.random() < 0.3:
        rest.append(_pick(rng, _FILLERS))
    clauses = [subject, *rest]
    order = [int(i) for i in rng.permutation(len(clauses))]
    if order[0] == 0:  # a leading subject may sit in a frame ("a picture of ...")
        clauses[0] = _fill(_pick(rng, _FRAMES), {"x": subject})
    return _pick(rng, _JOINERS).join(clauses[i] for i in order)
