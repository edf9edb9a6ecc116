"""Adversarial prompts through the whole pure prompt path (tags, AND, schedules, attention, tokens):
each either parses or raises InvalidRequestError, never anything else."""

from __future__ import annotations

import random

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.chunk import tokenize_line
from sdlab.prompt.parse import parse_prompt_attention
from sdlab.prompt.plan import plan_prompts
from sdlab.prompt.tokenizer import ClipTokenizer

ALPHABET = list("()[]{}<>:|\\,.0123456789 -+") + ["AND", "BREAK", "lora", "a", "é", "ｆ", "\u200b", "🙂", "\n"]


def random_prompt(rand: random.Random) -> str:
    return "".join(rand.choice(ALPHABET) for _ in range(rand.randint(0, 40)))


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.bundled("clip")


def test_random_prompts_parse_or_raise_invalid_request(tokenizer: ClipTokenizer) -> None:
    rand = random.Random(20261123)
    outcomes = {"ok": 0, "invalid": 0}
    for _ in range(3000):
        prompt, steps = random_prompt(rand), rand.randint(1, 30)
        try:
            plan = plan_prompts(prompt, random_prompt(rand), steps, second_order=rand.random() < 0.3)
            for text in plan.distinct_texts:
                parse_prompt_attention(text)
                tokenize_line(text, tokenizer, emphasis="Original", comma_padding_backtrack=20)
            outcomes["ok"] += 1
        except InvalidRequestError:
            outcomes["invalid"] += 1
    assert outcomes["ok"] > 2000, outcomes


@pytest.mark.parametrize("prompt", ["(a:1.2.3)", "x [(b:..)] y", "(c:1..2) AND d", "<lora:x:abc>"])
def test_prompts_a1111_rejects_are_invalid_requests(prompt: str, tokenizer: ClipTokenizer) -> None:
    with pytest.raises(InvalidRequestError):
        plan = plan_prompts(prompt, "", 10)
        for text in plan.distinct_texts:
            tokenize_line(text, tokenizer, emphasis="Original", comma_padding_backtrack=20)
