"""Composable prompts: ``a AND b:0.5`` as A1111 v1.10.1's ``get_multicond_prompt_list`` splits them.

A prompt is split on the whole word ``AND`` (case-sensitive, Unicode word boundaries: ``a-AND-b`` splits,
``aAND b`` does not). Each part may end in ``:weight`` (optional whitespace around the colon, a number
``[-+]?(digits[.] | [digits].digits)``, optional trailing whitespace); the part's text is what precedes it
with trailing whitespace removed and leading whitespace kept. No weight means 1.0. Splitting happens
before prompt-editing schedules, so ``[a AND b:c:5]`` becomes the parts ``[a`` and `` b:c:5]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


@dataclass(frozen=True)
class SubPrompt:
    """One ``AND`` part: its text and its CFG weight (any float, negative allowed)."""

    text: str
    weight: float


def split_weight(part: str) -> SubPrompt:
    """One AND part -> text and trailing ``:weight`` (1.0 when there is none)."""
    match = _TRAILING_WEIGHT.search(part)
    if match is None:  # the pattern matches every string; kept for safety with odd input
        return SubPrompt(part, 1.0)
    text, weight = match.groups()
    return SubPrompt(text, float(weight) if weight is not None else 1.0)


def split_and(prompt: str) -> tuple[SubPrompt, ...]:
    """The AND parts of ``prompt`` in order, each with its weight (at least one part)."""
    return tuple(split_weight(part) for part in _AND.split(prompt))


@dataclass(frozen=True)
class MulticondList:
    """A batch's AND parts: per prompt ``(flat_index, weight)`` pairs over ``flat_texts`` (each text once)."""

    indexes: tuple[tuple[tuple[int, float], ...], ...]
    flat_texts: tuple[str, ...]

    @property
    def text_index(self) -> dict[str, int]:
        """Text -> its index in ``flat_texts``."""
        return {text: index for index, text in enumerate(self.flat_texts)}


def multicond_prompt_list(prompts: Sequence[str]) -> MulticondList:
    """A1111's ``get_multicond_prompt_list``: identical texts share one flat index across the batch."""
    flat: dict[str, int] = {}
    indexes = []
    for prompt in prompts:
        pairs = []
        for sub in split_and(prompt):
            index = flat.setdefault(sub.text, len(flat))
            pairs.append((index, sub.weight))
        indexes.append(tuple(pairs))
    return MulticondList(tuple(indexes), tuple(flat))
