"""A procedurally drawn world of captioned images and its analyser, for the bundled default model."""

from __future__ import annotations

from sdlab.toyworld.analyse import ATTRIBUTES, Analysis, analyse, matches
from sdlab.toyworld.language import RESERVED_WORDS, free_caption
from sdlab.toyworld.world import (
    COLOURS,
    HELD_OUT_PAIRS,
    HELD_OUT_PHRASINGS,
    PHRASINGS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAIN_PHRASINGS,
    Scene,
    article,
    caption,
    clause_caption,
    parse_caption,
    random_scene,
    render,
    training_sample,
)

__all__ = [
    "ATTRIBUTES", "COLOURS", "HELD_OUT_PAIRS", "HELD_OUT_PHRASINGS", "PHRASINGS", "POSITIONS", "RESERVED_WORDS",
    "SHAPES", "SIZES", "TRAIN_PHRASINGS", "Analysis", "Scene", "analyse", "article", "caption", "clause_caption",
    "free_caption", "matches", "parse_caption", "random_scene", "render", "training_sample",
]
