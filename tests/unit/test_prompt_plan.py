"""PromptPlan: A1111's per-pass prompt preparation and denoiser-step selection."""

from __future__ import annotations

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.plan import WeightedText, entry_at, plan_prompts


def _texts(plan, steps):  # type: ignore[no-untyped-def]
    return [tuple(w.text for w in plan.cond_at(k)) for k in steps]


def test_switch_point_follows_the_denoiser_call_counter() -> None:
    plan = plan_prompts("[cat:dog:5]", "", 10)
    assert plan.parts[0].schedule == ((5, "cat"), (10, "dog"))
    # calls 0..5 use the first entry (A1111: first entry with k <= end_at_step), 6..9 the second
    assert [t for (t,) in _texts(plan, range(10))] == ["cat"] * 6 + ["dog"] * 4


def test_second_order_samplers_schedule_over_twice_the_steps() -> None:
    plan = plan_prompts("[cat:dog:0.5]", "[ugly:blurry:3]", 10, second_order=True)
    assert plan.total_steps == 20
    assert plan.parts[0].schedule == ((10, "cat"), (20, "dog"))
    assert plan.negative == ((3, "ugly"), (20, "blurry"))
    assert plan.uncond_at(3) == "ugly" and plan.uncond_at(4) == "blurry"
    assert plan.cond_at(10)[0].text == "cat" and plan.cond_at(11)[0].text == "dog"


def test_past_the_last_entry_falls_back_to_the_first() -> None:
    plan = plan_prompts("[a:b:2]", "", 4)
    assert plan.cond_at(4)[0].text == "b"
    assert plan.cond_at(5)[0].text == "a"  # e.g. DPM adaptive calls the model more often than steps


def test_hires_pass_timeline() -> None:
    plan = plan_prompts("[a:b:25] [c:d:1.5]", "", 20, hires_steps=10)
    assert plan.total_steps == 10
    assert plan.parts[0].schedule == ((5, "a c"), (10, "b d"))
    doubled = plan_prompts("[a:b:1.5]", "", 20, hires_steps=10, second_order=True)
    assert doubled.parts[0].schedule == ((10, "a"), (20, "b"))
    # integers count from the first pass's (doubled) total: 45 - 40 = hires step 5 of 20
    assert plan_prompts("[a:b:45]", "", 20, hires_steps=10, second_order=True).parts[0].schedule[0] == (5, "a")
    both = plan_prompts("[a:b:30]", "", 20, hires_steps=10, second_order=True)
    assert both.parts[0].schedule == ((20, "b"),)  # 30 - 40 < 1: already switched in the first pass
    mixed = plan_prompts("[a:b:30]", "", 20, hires_steps=10, second_order=True, first_pass_second_order=False)
    assert mixed.parts[0].schedule == ((10, "a"), (20, "b"))  # 30 - 20 = hires step 10


def test_old_scheduling_uses_first_pass_steps_even_for_hires() -> None:
    plan = plan_prompts("[a:b:0.5]", "", 20, hires_steps=10, use_old_scheduling=True)
    assert plan.total_steps == 20
    assert plan.parts[0].schedule == ((10, "a"), (20, "b"))


def test_and_parts_weights_and_tags() -> None:
    plan = plan_prompts("castle <lora:detail:0.6> AND [day|night] sky:0.5", "lowres <lora:bad:1>", 4)
    assert [t.name for t in plan.tags] == ["detail"]
    assert plan.prompt == "castle  AND [day|night] sky:0.5"
    # AND parts keep leading whitespace and lose trailing whitespace
    assert [(p.text, p.weight) for p in plan.parts] == [("castle", 1.0), (" [day|night] sky", 0.5)]
    assert plan.cond_at(1) == (WeightedText("castle", 1.0), WeightedText(" day sky", 0.5))
    assert plan.cond_at(2) == (WeightedText("castle", 1.0), WeightedText(" night sky", 0.5))
    # the negative prompt keeps its tag as text and is not split on AND
    assert plan.negative == ((4, "lowres <lora:bad:1>"),)


def test_tags_are_removed_before_scheduling() -> None:
    plan = plan_prompts("[<lora:x:0.5>:b:2]", "", 4)
    assert plan.parts[0].schedule == ((2, ""), (4, "b"))
    assert plan.tags[0].name == "x"


def test_distinct_texts_and_encode_batches() -> None:
    plan = plan_prompts("[a:b:1]AND[a:b:1]:2 AND(c)", "[a:c:1]", 3)
    assert plan.distinct_texts == ("a", "b", "(c)", "c")
    # one batch per distinct AND text (repeated parts share it), then the negative schedule
    assert plan.encode_batches == (("a", "b"), ("(c)",), ("a", "c"))
    assert [w.weight for w in plan.cond_at(0)] == [1.0, 2.0, 1.0]


def test_encode_batches_keep_repeated_schedule_texts() -> None:
    plan = plan_prompts("[a:[b:a:2]:1]", "", 3)
    assert plan.parts[0].schedule == ((1, "a"), (2, "b"), (3, "a"))
    assert plan.encode_batches[0] == ("a", "b", "a")
    assert plan.distinct_texts == ("a", "b", "")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 5, "hires_steps": 0}, "hires steps"),
        ({"steps": 5, "prompt": "<lora:x:oops>"}, "not a number"),
    ],
)
def test_invalid_plans(kwargs: dict, words: str) -> None:  # type: ignore[type-arg]
    args = {"prompt": "a", "negative_prompt": ""} | kwargs
    with pytest.raises(InvalidRequestError, match=words):
        plan_prompts(args.pop("prompt"), args.pop("negative_prompt"), args.pop("steps"), **args)


def test_entry_at_rejects_negative_steps() -> None:
    with pytest.raises(InvalidRequestError, match="step"):
        entry_at(((3, "a"),), -1)
