"""Conformance suite for ``prompt_schedules.json``: prompt-editing schedules and AND lists.

Every section holding ``cases`` (``schedules``, ``hires_schedules``, ``old_scheduling``, ``multicond``...)
and every stand-alone batch object (``batch_example``) is run; a case's kind is read from its fields:
``res_indexes`` -> multicond list, ``prompts`` + ``output`` -> batch schedule, ``prompt`` -> one schedule.
A case with ``error`` expects the call to be rejected (A1111 raised).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sdlab.conformance import VectorSuite
from sdlab.errors import InvalidRequestError
from sdlab.prompt.multicond import multicond_prompt_list
from sdlab.prompt.schedules import prompt_schedules


def _cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for section, value in data.items():
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("cases"), list):
            for index, case in enumerate(value["cases"]):
                yield f"{section}:{case.get('id', index)}", case
        elif "prompts" in value:
            yield section, value


def _as_schedule(raw: list[list[Any]]) -> tuple[tuple[int, str], ...]:
    return tuple((int(step), str(text)) for step, text in raw)


def _schedule_call(case: dict[str, Any]) -> list[tuple[tuple[int, str], ...]]:
    prompts = case["prompts"] if "prompts" in case else [case["prompt"]]
    base = case["base_steps"] if "base_steps" in case else case["steps"]
    return prompt_schedules(prompts, base, case.get("hires_steps"), bool(case.get("use_old_scheduling", False)))


def _check_schedule(case: dict[str, Any]) -> None:
    if "error" in case:
        try:
            got = _schedule_call(case)
        except InvalidRequestError:
            return
        raise AssertionError(f"expected an error like {case['error']!r}, got {got!r}")
    got = _schedule_call(case)
    if "prompts" in case:
        expected = [_as_schedule(item) for item in case["output"]]
    else:
        expected, got = [_as_schedule(case["output"])], got[:1]
    assert got == expected, f"prompt(s) {case.get('prompts', case.get('prompt'))!r}: expected {expected!r}, got {got!r}"


def _check_multicond(case: dict[str, Any]) -> None:
    got = multicond_prompt_list(case["prompts"])
    expected_indexes = tuple(tuple((int(i), float(w)) for i, w in item) for item in case["res_indexes"])
    assert got.indexes == expected_indexes, f"{case['prompts']!r}: indexes {got.indexes!r} != {expected_indexes!r}"
    assert list(got.flat_texts) == case["prompt_flat_list"], f"{case['prompts']!r}: flat list {got.flat_texts!r}"
    if "prompt_indexes" in case:
        assert got.text_index == case["prompt_indexes"], f"{case['prompts']!r}: text index {got.text_index!r}"


def _check(case: dict[str, Any], context: Any) -> None:
    if "res_indexes" in case:
        _check_multicond(case)
    else:
        _check_schedule(case)


SUITE = VectorSuite(file="prompt_schedules.json", cases=_cases, check=_check)
