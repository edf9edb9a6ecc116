"""A1111 prompt editing and alternation: ``[from:to:when]``, ``[to:when]``, ``[from::when]``, ``[a|b|c]``.

Reproduces ``get_learned_conditioning_prompt_schedules`` of A1111 v1.10.1 with a hand-written parser:

* Grammar: text is any character except ``\\ [ ] ( ) : |`` or a backslash escape (kept verbatim);
  ``( … )``, ``( … : … )`` and ``[ … ]`` are passed through verbatim; ``[before:after:N]`` /
  ``[after:N]`` (whitespace allowed around N, N a signed int/decimal/exponent number) is *scheduled*;
  ``[a|b|…]`` (empty options allowed) is *alternate*. At the top level, brackets and colons that do not
  form a group are plain text. A ``|`` outside an alternate, or a backslash at the end of the prompt or
  before a newline, makes the whole prompt unparseable: its schedule is then ``((steps, prompt),)``.
* Where a bracket could be a group or stray text, the group wins.
* Switch steps, boundaries and per-step texts follow A1111 (see :func:`switch_step`, :func:`prompt_schedule`).

Deliberate limit: groups nested more than :data:`MAX_NESTING` deep raise :class:`InvalidRequestError`
(A1111 itself dies with a RecursionError somewhere between 200 and 300 levels).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sdlab.errors import InvalidRequestError

#: Deepest nesting of well-formed ``( )`` / ``[ ]`` groups accepted.
MAX_NESTING = 200

#: One schedule entry: (last sampler step it applies to, 1-based inclusive; prompt text).
ScheduleEntry = tuple[int, str]
Schedule = tuple[ScheduleEntry, ...]

_PLAIN_RUN = re.compile(r"[^\\\[\]():|]+")
_SPACE = re.compile(r"\s+")
# Same alternatives, in the same order, as lark's common SIGNED_NUMBER (Python's first-match regex semantics).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")
_OPEN_TO_CLOSE = {"(": ")", "[": "]"}
_CLOSERS = frozenset(")]")


@dataclass(frozen=True)
class Text:
    """Verbatim text (plain text, escapes, whitespace, pass-through brackets)."""

    text: str


@dataclass(frozen=True)
class Scheduled:
    """``[before:after:number]``; ``before`` is ``None`` in the ``[after:number]`` form."""

    before: tuple[Node, ...] | None
    after: tuple[Node, ...]
    number: str


@dataclass(frozen=True)
class Alternate:
    """``[a|b|...]``: option ``(step - 1) % len(options)`` applies at sampler step ``step``."""

    options: tuple[tuple[Node, ...], ...]


Node = Text | Scheduled | Alternate


@dataclass(frozen=True)
class Timeline:
    """How schedule numbers map to steps: ``steps`` boundaries, integer / fraction offsets, old mode."""

    steps: int
    int_offset: int = 0
    float_offset: float = 0.0
    old: bool = False


def make_timeline(base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False) -> Timeline:
    """A1111's timeline: the hires pass (``hires_steps`` given, new scheduling) offsets integers by
    ``base_steps`` and fractions by 1.0; otherwise schedules run over ``base_steps``. Steps must be >= 1."""
    for name, value in (("steps", base_steps), ("hires steps", hires_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidRequestError(f"{name} must be a whole number >= 1, got {value!r}")
    if hires_steps is None or use_old_scheduling:
        return Timeline(steps=base_steps, old=use_old_scheduling)
    return Timeline(steps=hires_steps, int_offset=base_steps, float_offset=1.0)


def switch_step(number: str, timeline: Timeline) -> int:
    """The step through which ``before`` applies, for the number's source text (may be <= 0).

    New scheduling: text with a "." is a fraction, ``int((N - float_offset) * steps)``, else
    ``int(N - int_offset)``; old scheduling: ``int(N * steps)`` if N < 1 else ``int(N)``; capped at steps.
    """
    value = float(number)
    if timeline.old:
        value = value * timeline.steps if value < 1 else value
    elif "." in number:
        value = (value - timeline.float_offset) * timeline.steps
    else:
        value = value - timeline.int_offset
    try:
        return min(timeline.steps, int(value))
    except (OverflowError, ValueError):
        raise InvalidRequestError(
            f"prompt editing step {number!r} is too large to be a step number; use a step count or a fraction"
        ) from None


class _Parser:
    """One parse of one prompt (holds per-call memo tables only)."""

    def __init__(self, text: str, closing: dict[int, int]) -> None:
        self.text = text
        self.closing = closing
        self.memo: dict[int, tuple[tuple[Node, ...], int] | None] = {}

    def prompt(self, pos: int, depth: int) -> tuple[tuple[Node, ...], int]:
        """A ``prompt`` from ``pos``: stops at ``] ) : |``, the end, or a bracket that opens no group."""
        text, nodes, pieces = self.text, [], []
        while pos < len(text):
            char = text[pos]
            if char in "[(":
                group = self.group(pos, depth + 1)
                if group is None:
                    break
                _flush(pieces, nodes)
                nodes.extend(group[0])
                pos = group[1]
            elif char in "]):|":
                break
            elif char == "\\":
                pieces.append(text[pos : pos + 2])
                pos += 2
            else:
                end = _PLAIN_RUN.match(text, pos).end()  # type: ignore[union-attr]
                pieces.append(text[pos:end])
                pos = end
        _flush(pieces, nodes)
        return tuple(nodes), pos

    def group(self, pos: int, depth: int) -> tuple[tuple[Node, ...], int] | None:
        """The group opened at ``pos`` as (nodes, end), or None where none can start there."""
        if pos not in self.closing:
            return None
        if pos not in self.memo:
            if depth > MAX_NESTING:
                raise InvalidRequestError(f"prompt brackets are nested more than {MAX_NESTING} levels deep")
            self.memo[pos] = self._round(pos, depth) if self.text[pos] == "(" else self._square(pos, depth)
        return self.memo[pos]

    def _at(self, pos: int) -> str:
        return self.text[pos] if pos < len(self.text) else ""

    def _round(self, pos: int, depth: int) -> tuple[tuple[Node, ...], int] | None:
        first, end = self.prompt(pos + 1, depth)
        if self._at(end) == ")":
            return (Text("("), *first, Text(")")), end + 1
        if self._at(end) != ":":
            return None
        second, end2 = self.prompt(end + 1, depth)
        if self._at(end2) != ")":
            return None
        return (Text("("), *first, Text(":"), *second, Text(")")), end2 + 1

    def _square(self, pos: int, depth: int) -> tuple[tuple[Node, ...], int] | None:
        first, end = self.prompt(pos + 1, depth)
        mark = self._at(end)
        if mark == "]":
            return (Text("["), *first, Text("]")), end + 1
        if mark == "|":
            return self._alternate(first, end, depth)
        if mark == ":":
            return self._scheduled(first, end, depth)
        return None

    def _alternate(self, first: tuple[Node, ...], pos: int, depth: int) -> tuple[tuple[Node, ...], int] | None:
        options = [first]
        while self._at(pos) == "|":
            option, pos = self.prompt(pos + 1, depth)
            options.append(option)
        if self._at(pos) != "]":
            return None
        return (Alternate(tuple(options)),), pos + 1

    def _scheduled(self, first: tuple[Node, ...], colon: int, depth: int) -> tuple[tuple[Node, ...], int] | None:
        tail = self._number_tail(colon + 1)
        if tail is not None:
            return (Scheduled(None, first, tail[0]),), tail[1]
        second, end = self.prompt(colon + 1, depth)
        if self._at(end) != ":":
            return None
        tail = self._number_tail(end + 1)
        if tail is None:
            return None
        return (Scheduled(first, second, tail[0]),), tail[1]

    def _number_tail(self, pos: int) -> tuple[str, int] | None:
        """``[whitespace] NUMBER [whitespace] ]`` from ``pos`` as (number text, end after ``]``)."""
        space = _SPACE.match(self.text, pos)
        pos = space.end() if space else pos
        number = _NUMBER.match(self.text, pos)
        if number is None:
            return None
        pos = number.end()
        space = _SPACE.match(self.text, pos)
        pos = space.end() if space else pos
        return (number.group(), pos + 1) if self._at(pos) == "]" else None


def _flush(pieces: list[str], nodes: list[Node]) -> None:
    if pieces:
        nodes.append(Text("".join(pieces)))
        pieces.clear()


def _group_closings(text: str) -> dict[int, int] | None:
    """Opener position -> position of its balanced closer, for openers that can possibly form a group;
    None when the prompt has a backslash that escapes nothing (end of text or a newline)."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text) or text[pos + 1] == "\n":
                return None
            pos += 2
            continue
        if char in _OPEN_TO_CLOSE:
            stack.append(pos)
        elif char in _CLOSERS:
            if stack and _OPEN_TO_CLOSE[text[stack[-1]]] == char:
                closing[stack.pop()] = pos
            else:
                stack.clear()  # an unbalanced closer: every still-open bracket around it is stray text
        pos += 1
    return closing


def parse_schedule_tree(prompt: str) -> tuple[Node, ...] | None:
    """The prompt as nodes, or None where A1111's schedule grammar cannot parse it."""
    closing = _group_closings(prompt)
    if closing is None:
        return None
    parser = _Parser(prompt, closing)
    nodes: list[Node] = []
    pieces: list[str] = []
    pos = 0
    while pos < len(prompt):
        char = prompt[pos]
        if char == "|":
            return None
        group = parser.group(pos, 1) if char in "[(" else None
        if group is not None:
            _flush(pieces, nodes)
            nodes.extend(group[0])
            pos = group[1]
        elif char in "[]():":
            pieces.append(char)
            pos += 1
        else:
            chunk, pos = parser.prompt(pos, 0)
            _flush(pieces, nodes)
            nodes.extend(chunk)
    _flush(pieces, nodes)
    return tuple(nodes)


def _walk(nodes: Sequence[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Scheduled):
            yield from _walk(node.before or ())
            yield from _walk(node.after)
        elif isinstance(node, Alternate):
            for option in node.options:
                yield from _walk(option)


def _boundaries(nodes: Sequence[Node], timeline: Timeline) -> tuple[list[int], dict[str, int]]:
    """Sorted boundary steps and number text -> switch step."""
    steps = {timeline.steps}
    whens: dict[str, int] = {}
    for node in _walk(nodes):
        if isinstance(node, Scheduled):
            when = whens.setdefault(node.number, switch_step(node.number, timeline))
            if when >= 1:
                steps.add(when)
        elif isinstance(node, Alternate):
            steps.update(range(1, timeline.steps + 1))
    return sorted(steps), whens


def _render(nodes: Sequence[Node], step: int, whens: dict[str, int], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Scheduled):
            _render((node.before or ()) if step <= whens[node.number] else node.after, step, whens, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, whens, out)


def prompt_schedule(
    prompt: str, base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> Schedule:
    """A1111's schedule of one prompt: ``((end_at_step, text), ...)``, steps 1-based and inclusive.

    ``base_steps``/``hires_steps`` are the sampler's *total* step counts (A1111 doubles them for
    second-order samplers). Consecutive equal texts are kept, as A1111 keeps them.
    """
    timeline = make_timeline(base_steps, hires_steps, use_old_scheduling)
    nodes = parse_schedule_tree(prompt)
    if nodes is None:
        return ((timeline.steps, prompt),)
    boundaries, whens = _boundaries(nodes, timeline)
    result = []
    for step in boundaries:
        out: list[str] = []
        _render(nodes, step, whens, out)
        result.append((step, "".join(out)))
    return tuple(result)


def prompt_schedules(
    prompts: Sequence[str], base_steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[Schedule]:
    """:func:`prompt_schedule` for a batch, in order (duplicates computed once)."""
    done: dict[str, Schedule] = {}
    for prompt in prompts:
        if prompt not in done:
            done[prompt] = prompt_schedule(prompt, base_steps, hires_steps, use_old_scheduling)
    return [done[prompt] for prompt in prompts]
