"""A1111 prompt-attention parsing, as far as infotext needs it (does any piece carry a weight)."""

from __future__ import annotations

import re
from typing import Any

_ATTENTION = re.compile(
    r"""
      \\[()\[\]\\]             # escaped bracket or backslash
    | \\                       # lone backslash
    | [(\[]                    # opening bracket
    | :\s*([+-]?[.\d]+)\s*\)   # ":weight)"
    | [)\]]                    # closing bracket
    | [^\\()\[\]:]+            # plain text
    | :                        # lone colon
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")


def split_break(text: str) -> list[str]:
    """``re.split(r"\\s*\\bBREAK\\b\\s*", text)`` in linear time (the regex is quadratic on long blanks)."""
    parts: list[str] = []
    last = 0
    for match in _BREAK_WORD.finditer(text):
        start = match.start()
        while start > last and text[start - 1].isspace():
            start -= 1
        end = match.end()
        while end < len(text) and text[end].isspace():
            end += 1
        parts.append(text[last:start])
        last = end
    parts.append(text[last:])
    return parts


def attention_pieces(text: str) -> list[tuple[str, float]]:
    """(text, weight) pieces of A1111's prompt-attention parse, adjacent equal weights merged.

    Raises ValueError for a weight such as ``1.2.3``, as A1111 does.
    """
    pieces: list[list[Any]] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token in ("(", "["):
            (open_round if token == "(" else open_square).append(len(pieces))
        elif weight is not None and open_round:
            scale(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            scale(open_round.pop(), 1.1)
        elif token == "]" and open_square:
            scale(open_square.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(split_break(token)):
                if i:
                    pieces.append(["BREAK", -1])
                pieces.append([part, 1.0])
    for start in open_round:
        scale(start, 1.1)
    for start in open_square:
        scale(start, 1 / 1.1)
    return _merge_equal(pieces or [["", 1.0]])


def _merge_equal(pieces: list[list[Any]]) -> list[tuple[str, float]]:
    merged: list[list[Any]] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


def uses_emphasis(*prompts: str) -> bool:
    """Whether any attention piece (BREAK aside) of the prompts has a weight other than 1.

    Only brackets change weights; bracket-heavy text costs O(pieces x brackets), as in A1111.
    """
    bracketed = (p for p in prompts if "(" in p or "[" in p)
    return any(text != "BREAK" and weight != 1.0 for p in bracketed for text, weight in attention_pieces(p))
