"""parse_prompt_attention: A1111 rules, errors with positions, and a seeded fuzz test."""

from __future__ import annotations

import random

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.parse import parse_prompt_attention


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [("", 1.0)]),
        ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
        ("((a))", [("a", 1.2100000000000002)]),
        ("[a]", [("a", 0.9090909090909091)]),
        ("(a:1.5)", [("a", 1.5)]),
        ("(a: -0.5 )", [("a", -0.5)]),
        ("a:1.5)", [("a:1.5)", 1.0)]),
        ("\\(a\\)", [("(a)", 1.0)]),
        ("C:\\Users", [("C:Users", 1.0)]),
        ("(a", [("a", 1.1)]),
        ("[(a]", [("a", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ("aBREAK b", [("aBREAK b", 1.0)]),
        ("[a:b:0.5]", [("a:b:0.5", 0.9090909090909091)]),
        ("(a:1e3)", [("a:1e3", 1.1)]),
    ],
)
def test_a1111_rules(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_prompt_attention(text) == expected


@pytest.mark.parametrize(("text", "position"), [("(a:1.2.3)", 2), ("x (a:.)", 4), ("((b:1..2)", 3)])
def test_malformed_weight_names_position_and_fix(text: str, position: int) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_prompt_attention(text)
    message = str(info.value)
    assert f"character {position}" in message
    assert "escape" in message


def test_unicode_digits_are_weights_like_python_float() -> None:
    # A1111 uses Python's Unicode \d and float(): Arabic-Indic digits are a valid weight.
    assert parse_prompt_attention("(a:\u0661.\u0665)") == [("a", 1.5)]


def test_fuzz_never_raises_anything_but_invalid_request() -> None:
    alphabet = list("()[]:|\\0123456789.  abBREAK\t\n+-") + ["é", "\u3000", "\u0661", "💥", "BREAK"]
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(10_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        try:
            result = parse_prompt_attention(text)
        except InvalidRequestError:
            outcomes["error"] += 1
            continue
        assert result and all(isinstance(t, str) and isinstance(w, float) for t, w in result), text
        assert all(result[i][1] != result[i + 1][1] for i in range(len(result) - 1)), text
        outcomes["ok"] += 1
    assert outcomes["ok"] > 5_000 and outcomes["error"] > 0
