"""A1111 attention syntax: ``(text)``, ``[text]``, ``(text:1.3)``, backslash escapes and ``BREAK``.

:func:`parse_prompt_attention` turns a prompt into ``(text, weight)`` pieces exactly as A1111 v1.10.1's
``prompt_parser.parse_prompt_attention``:

* ``(`` ... ``)`` multiplies by 1.1, ``[`` ... ``]`` by 1/1.1, ``(`` ... ``:N)`` by ``float(N)``; the round
  and square stacks are independent; unclosed openers apply at the end (round first, then square, each
  bottom-up); closers without an opener, and ``:N)`` without an open ``(``, are literal text.
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` give the literal character; any other backslash is dropped.
* ``BREAK`` (whole word, case-sensitive) becomes the piece ``("BREAK", -1.0)`` times enclosing weights.
* Adjacent pieces with exactly equal weight are merged; an empty prompt gives ``[("", 1.0)]``.

Weights multiply left to right in float64. Where A1111 raises (a malformed weight such as ``(a:1.2.3)``)
this raises :class:`~sdlab.errors.InvalidRequestError` naming the character position.
"""

from __future__ import annotations

import re

from sdlab.errors import InvalidRequestError

#: multiplier of one ``( )`` level and of one ``[ ]`` level
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

#: marker weight of a BREAK piece (before enclosing brackets scale it)
BREAK_WEIGHT = -1.0

# Token alternatives, in priority order. ``\d`` and ``\s`` are Unicode-aware, as in A1111 (Python ``re``).
_TOKEN = re.compile(
    r"\\[()\[\]\\]"  # escaped bracket or backslash -> literal character
    r"|\\"  # lone backslash -> dropped
    r"|[(\[]"  # openers
    r"|:\s*(?P<weight>[+-]?[.\d]+)\s*\)"  # weight closer
    r"|[)\]]"  # plain closers
    r"|[^\\()\[\]:]+"  # run of plain text
    r"|:"  # lone colon
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def _weight_value(number: str, position: int) -> float:
    try:
        return float(number)
    except ValueError:
        raise InvalidRequestError(
            f"invalid attention weight {number!r} in '(...:{number})' at character {position}: "
            f"could not convert string to float; write a number such as 1.2, "
            f"or escape the brackets/colon (\\( \\) \\:) if the text is literal"
        ) from None


def _scale(pieces: list[list], start: int, factor: float) -> None:
    for piece in pieces[start:]:
        piece[1] *= factor


def _append_text(pieces: list[list], text: str) -> None:
    for index, part in enumerate(_BREAK.split(text)):
        if index:
            pieces.append(["BREAK", BREAK_WEIGHT])
        pieces.append([part, 1.0])


def _merge_equal_neighbours(pieces: list[list]) -> list[tuple[str, float]]:
    merged: list[list] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(piece, weight)`` pairs with A1111's attention rules (see module docstring).

    Raises InvalidRequestError for a weight A1111 cannot convert (``(a:1.2.3)``, ``(a:.)``).
    """
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        number = match.group("weight")
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif number is not None and round_open:
            _scale(pieces, round_open.pop(), _weight_value(number, match.start()))
        elif token == ")" and round_open:
            _scale(pieces, round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            _scale(pieces, square_open.pop(), SQUARE_MULTIPLIER)
        else:
            _append_text(pieces, token)
    for start in round_open:
        _scale(pieces, start, ROUND_MULTIPLIER)
    for start in square_open:
        _scale(pieces, start, SQUARE_MULTIPLIER)
    if not pieces:
        return [("", 1.0)]
    return _merge_equal_neighbours(pieces)
