"""prompt_attention.json: :func:`sdlab.prompt.parse.parse_prompt_attention` against A1111's output.

A case with ``output`` must give exactly those ``[text, weight]`` pairs (weights compared as exact
doubles); a case with ``error`` must raise InvalidRequestError (A1111 raises ValueError there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sdlab.conformance import VectorSuite
from sdlab.errors import InvalidRequestError
from sdlab.prompt.parse import parse_prompt_attention


def _cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for index, case in enumerate(data["cases"]):
        yield f"{case.get('group', 'case')}-{case.get('id', index)}", case


def _check(case: dict[str, Any], context: Any) -> None:
    text = case["input"]
    if "error" in case:
        try:
            got = parse_prompt_attention(text)
        except InvalidRequestError:
            return None
        raise AssertionError(f"{text!r}: A1111 raises {case['error']!r}, sdlab returned {got!r}")
    got = [[piece, weight] for piece, weight in parse_prompt_attention(text)]
    expected = [[piece, float(weight)] for piece, weight in case["output"]]
    assert got == expected, f"{text!r}: expected {expected!r}, got {got!r}"
    return None


SUITE = VectorSuite(file="prompt_attention.json", cases=_cases, check=_check)
