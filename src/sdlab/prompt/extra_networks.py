"""Extra-network tags in prompts (``<lora:name:0.8>``, ``<lyco:...>``, ``<hypernet:...>``), as A1111 v1.10.1.

A tag is ``<kind:args>`` with ``kind`` a run of word characters and ``args`` anything up to the next ``>``
(regex ``<(\\w+):([^>]+)>``). Every tag, known kind or not, is removed from the prompt and the text around
it is left exactly as it was (no whitespace clean-up). ``args`` is split on ``:``; an item with exactly one
``=`` is named (``te=0.5``; a later duplicate wins), every other item is positional.

* ``lora`` / ``lyco``: name = 1st positional; te = 2nd positional or ``te=`` (default 1.0); unet = 3rd
  positional or ``unet=`` (default: te); dyn = 4th positional or ``dyn=`` (integer, default none).
* ``hypernet``: name = 1st item, multiplier = 2nd item (default 1.0), used for te and unet alike.
* Other kinds: removed from the text and reported in ``unknown`` (A1111 skips them with a log line).

Tags are returned grouped by kind (kinds in order of first appearance, tags in order within a kind), the
order in which A1111 hands them to its networks. Numbers are read with Python's ``float``/``int`` like A1111;
malformed or non-finite numbers raise :class:`InvalidRequestError` naming the tag.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sdlab.errors import InvalidRequestError

TAG_PATTERN = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkTag:
    """One parsed tag. Multipliers are unbounded floats (1.0 = full strength); ``dyn_dim`` a rank or None."""

    kind: str
    name: str
    te_multiplier: float
    unet_multiplier: float
    dyn_dim: int | None
    raw: str


@dataclass(frozen=True)
class TagArgs:
    """A tag's ``:``-separated items split into positional and named (``key=value``) ones."""

    items: tuple[str, ...]
    positional: tuple[str, ...]
    named: Mapping[str, str]


@dataclass(frozen=True)
class ExtraNetworkParse:
    """A prompt with its tags removed, the tags of known kinds, and the raw text of unknown-kind tags."""

    text: str
    tags: tuple[ExtraNetworkTag, ...]
    unknown: tuple[str, ...]


def split_args(args: str) -> TagArgs:
    """Split a tag's argument text the way A1111's ``ExtraNetworkParams`` does."""
    items = tuple(args.split(":"))
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    return TagArgs(items, tuple(positional), MappingProxyType(named))


def _number(text: str, what: str, raw: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequestError(f"{raw}: {what} {text!r} is not a number; write e.g. 0.8") from None
    if not math.isfinite(value):
        raise InvalidRequestError(f"{raw}: {what} {text!r} must be a finite number")
    return value


def _integer(text: str, what: str, raw: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(f"{raw}: {what} {text!r} is not a whole number; write e.g. 16") from None


def _lora_tag(kind: str, args: TagArgs, raw: str) -> ExtraNetworkTag:
    if not args.positional:
        raise InvalidRequestError(f"{raw}: the tag names no network; write <{kind}:name:multiplier>")
    pos = args.positional
    te = _number(pos[1], "text-encoder multiplier", raw) if len(pos) > 1 else 1.0
    te = _number(args.named["te"], "te", raw) if "te" in args.named else te
    unet = _number(pos[2], "UNet multiplier", raw) if len(pos) > 2 else te
    unet = _number(args.named["unet"], "unet", raw) if "unet" in args.named else unet
    dyn = _integer(pos[3], "dyn dimension", raw) if len(pos) > 3 else None
    dyn = _integer(args.named["dyn"], "dyn", raw) if "dyn" in args.named else dyn
    return ExtraNetworkTag(kind, pos[0], te, unet, dyn, raw)


def _hypernet_tag(kind: str, args: TagArgs, raw: str) -> ExtraNetworkTag:
    multiplier = _number(args.items[1], "multiplier", raw) if len(args.items) > 1 else 1.0
    return ExtraNetworkTag(kind, args.items[0], multiplier, multiplier, None, raw)


TagParser = Callable[[str, TagArgs, str], ExtraNetworkTag]

#: Tag kind (case-sensitive, as written in prompts) -> parser of its arguments.
TAG_KINDS: Mapping[str, TagParser] = MappingProxyType(
    {"lora": _lora_tag, "lyco": _lora_tag, "hypernet": _hypernet_tag}
)


def parse_extra_networks(prompt: str) -> ExtraNetworkParse:
    """Remove every ``<kind:args>`` tag from ``prompt`` and parse the known ones."""
    by_kind: dict[str, list[ExtraNetworkTag]] = {}
    unknown: list[str] = []
    for match in TAG_PATTERN.finditer(prompt):
        kind, raw = match.group(1), match.group(0)
        parser = TAG_KINDS.get(kind)
        if parser is None:
            unknown.append(raw)
            continue
        by_kind.setdefault(kind, []).append(parser(kind, split_args(match.group(2)), raw))
    tags = tuple(tag for group in by_kind.values() for tag in group)
    return ExtraNetworkParse(TAG_PATTERN.sub("", prompt), tags, tuple(unknown))


def strip_extra_networks(prompt: str) -> str:
    """``prompt`` with every tag removed (no parsing, never raises)."""
    return TAG_PATTERN.sub("", prompt)
