"""Prompt-editing schedules and AND splitting (A1111 v1.10.1 semantics; vectors are in tests/conformance)."""

from __future__ import annotations

import random
import re

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.multicond import multicond_prompt_list, split_and, split_weight
from sdlab.prompt.schedules import (
    MAX_NESTING,
    make_timeline,
    parse_schedule_tree,
    prompt_schedule,
    prompt_schedules,
    switch_step,
)


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("a [b:c:3] d", 10, ((3, "a b d"), (10, "a c d"))),
        ("[b:3]", 10, ((3, ""), (10, "b"))),
        ("[b::3]", 10, ((3, "b"), (10, ""))),
        ("[b:c:0.25]", 8, ((2, "b"), (8, "c"))),
        ("[b:c:0]", 8, ((8, "c"),)),
        ("[b:c:1.0]", 8, ((8, "b"),)),  # a fraction of 1.0 switches after the last step
        ("[b:c:1]", 8, ((1, "b"), (8, "c"))),  # the integer 1 switches after step 1
        ("[b:c: 2 ]", 4, ((2, "b"), (4, "c"))),
        ("[x|y]", 3, ((1, "x"), (2, "y"), (3, "x"))),
        ("[x||y]", 4, ((1, "x"), (2, ""), (3, "y"), (4, "x"))),
        ("[a:[b:c:2]:3]", 4, ((2, "a"), (3, "a"), (4, "c"))),  # equal neighbours are not merged
        ("(a:1.2) [b] (c)", 5, ((5, "(a:1.2) [b] (c)"),)),
        ("[(a:1.2):(b):2]", 3, ((2, "(a:1.2)"), (3, "(b)"))),
        ("x ]][b:c:2][[", 3, ((2, "x ]]b[["), (3, "x ]]c[["))),
        ("\\[b:c:2\\]", 3, ((3, "\\[b:c:2\\]"),)),  # escapes are kept verbatim
        ("[b\\:x:c:2]", 3, ((2, "b\\:x"), (3, "c"))),
    ],
)
def test_schedule_forms(prompt: str, steps: int, expected: tuple[tuple[int, str], ...]) -> None:
    assert prompt_schedule(prompt, steps) == expected


@pytest.mark.parametrize(
    "prompt",
    ["[a|b] | c", "a (b|c) d [x:y:2]", "[a:b:2] \\", "[a:b:2] \\\nz", "a [{b|d{:.5] c", "|"],
)
def test_unparseable_prompts_are_returned_unchanged(prompt: str) -> None:
    assert prompt_schedule(prompt, 6) == ((6, prompt),)
    assert parse_schedule_tree(prompt) is None


@pytest.mark.parametrize("prompt", ["[a:b:c]", "[a:b:]", "[a:b]", "(a:b:5)", "[a:b:5", "[5]", "[a:b:5.5.5]"])
def test_brackets_that_form_no_edit_stay_text(prompt: str) -> None:
    assert prompt_schedule(prompt, 7) == ((7, prompt),)
    assert parse_schedule_tree(prompt) is not None


def test_hires_timeline_offsets_integers_by_base_steps_and_fractions_by_one() -> None:
    assert prompt_schedule("[a:b:25]", 20, 10) == ((5, "a"), (10, "b"))
    assert prompt_schedule("[a:b:1.5]", 20, 10) == ((5, "a"), (10, "b"))
    assert prompt_schedule("[a:b:0.5]", 20, 10) == ((10, "b"),)  # the edit happened in the first pass
    assert prompt_schedule("[a:b:2.0]", 20, 10) == ((10, "a"),)


def test_old_scheduling_ignores_hires_steps() -> None:
    assert prompt_schedule("[a:b:0.5]", 20, 10, use_old_scheduling=True) == ((10, "a"), (20, "b"))
    assert prompt_schedule("[a:b:1.0]", 20, None, use_old_scheduling=True) == ((1, "a"), (20, "b"))
    assert prompt_schedule("[a:b:0.999]", 10, None, use_old_scheduling=True) == ((9, "a"), (10, "b"))


def test_switch_step_truncates_toward_zero() -> None:
    timeline = make_timeline(10)
    assert switch_step("0.999", timeline) == 9
    assert switch_step("1e-1", timeline) == 0
    assert switch_step("-3", timeline) == -3
    assert switch_step("500", timeline) == 10


@pytest.mark.parametrize("number", ["9" * 400, "9" * 400 + ".5", "-" + "1" * 400])
def test_numbers_that_overflow_raise_like_a1111(number: str) -> None:
    with pytest.raises(InvalidRequestError, match="too large"):
        prompt_schedule(f"[a:b:{number}]", 20)


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_bad_step_counts_are_rejected(steps: object) -> None:
    with pytest.raises(InvalidRequestError, match="steps"):
        prompt_schedule("a", steps)  # type: ignore[arg-type]


def test_deep_nesting() -> None:
    assert prompt_schedule("(" * 2000 + "a", 5) == ((5, "(" * 2000 + "a"),)  # unclosed: plain text
    ok = "[" * MAX_NESTING + "a:b:2" + "]" * MAX_NESTING
    assert prompt_schedule(ok, 3)[0] == (2, "[" * (MAX_NESTING - 1) + "a" + "]" * (MAX_NESTING - 1))
    too_deep = "[" * (MAX_NESTING + 1) + "a" + "]" * (MAX_NESTING + 1)
    with pytest.raises(InvalidRequestError, match="nested"):
        prompt_schedule(too_deep, 3)


def test_batch_keeps_order_and_duplicates() -> None:
    got = prompt_schedules(["[a:b:1]", "x", "[a:b:1]"], 2)
    assert got == [((1, "a"), (2, "b")), ((2, "x"),), ((1, "a"), (2, "b"))]


def _fuzz_prompt(rng: random.Random) -> str:
    alphabet = ["[", "]", "(", ")", ":", "|", "\\", " ", ".", "AND", "é", "猫", "\n", "a", "b"] + list("0123456789")
    alphabet += ["[a:b:3]", "[c|d]", "[e::0.5]", "[:f:2]"]
    pieces = [rng.choice(alphabet) for _ in range(rng.randint(0, 24))]
    if rng.random() < 0.01:
        pieces.insert(rng.randint(0, len(pieces)), "9" * 320)
    return "".join(pieces)


def test_fuzz_never_crashes_and_schedules_are_well_formed() -> None:
    rng = random.Random(1234)
    edited = 0
    for _ in range(10_000):
        prompt, steps = _fuzz_prompt(rng), rng.choice([1, 3, 10, 20])
        try:
            schedule = prompt_schedule(prompt, steps)
        except InvalidRequestError:
            assert re.search(r"[0-9]{309}", prompt), f"unexpected rejection of {prompt!r}"
            continue
        ends = [end for end, _ in schedule]
        assert ends == sorted(set(ends)) and 1 <= ends[0] and ends[-1] == steps, (prompt, schedule)
        if "[" not in prompt:
            assert schedule == ((steps, prompt),), prompt
        if "|" not in prompt and ":" not in prompt:
            assert all(text == prompt for _, text in schedule), prompt  # only pass-through brackets
        edited += len(schedule) > 1
    assert edited > 100  # the generator does produce edits and alternations


def test_split_and_weights_and_text() -> None:
    assert [(p.text, p.weight) for p in split_and("a AND  b :  -0.3 AND c:1e2")] == [
        ("a", 1.0),
        ("  b", -0.3),
        (" c:1e2", 1.0),
    ]
    assert [p.text for p in split_and("a-AND-b aAND c")] == ["a-", "-b aAND c"]
    assert split_weight("x:5:0.5").text == "x:5" and split_weight("x:5:0.5").weight == 0.5
    assert split_weight("x:1.2.3").weight == 1.0


def test_multicond_list_shares_identical_texts_across_the_batch() -> None:
    got = multicond_prompt_list(["a AND b", "b AND c:0.5", "a"])
    assert got.flat_texts == ("a", " b", "b", " c")
    assert got.indexes == (((0, 1.0), (1, 1.0)), ((2, 1.0), (3, 0.5)), ((0, 1.0),))
    assert got.text_index == {"a": 0, " b": 1, "b": 2, " c": 3}
