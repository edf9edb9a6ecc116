"""Scheduled conditioning: which encoded text each image uses at each denoiser call (A1111 semantics)."""

from __future__ import annotations

import torch

from sdlab.pipeline.conditioning import EncodedPlan, EncodedText, ScheduledConditioning, pad_to_tokens
from sdlab.prompt.plan import plan_prompts


def _enc(value: int, tokens: int = 77) -> EncodedText:
    """A context filled with ``value``, so rows can be told apart."""
    return EncodedText(torch.full((tokens, 2), float(value)), None)


def test_prompt_edit_switches_after_its_step() -> None:
    plan = plan_prompts("a [red:blue:2] cat", "ugly", 4)
    encoded = EncodedPlan(({"a red cat": _enc(1), "a blue cat": _enc(2)},), {"ugly": _enc(9)})
    cond = ScheduledConditioning(plan, encoded, 2, {}, {})
    ids = [cond.cond_at(step).tensor["context"][:, 0, 0].tolist() for step in range(4)]
    assert ids == [[1, 1], [1, 1], [1, 1], [2, 2]]
    assert cond.uncond_at(3)["context"][:, 0, 0].tolist() == [9, 9]


def test_and_parts_become_weighted_rows_per_image() -> None:
    plan = plan_prompts("cat AND dog:0.5", "", 2)
    encoded = EncodedPlan(({"cat": _enc(1)}, {" dog": _enc(2, 154)}), {"": _enc(0)})
    multi = ScheduledConditioning(plan, encoded, 2, {}, {}).cond_at(0)
    assert multi.conds_list == (((0, 1.0), (1, 0.5)), ((2, 1.0), (3, 0.5)))
    context = multi.tensor["context"]
    assert context.shape == (4, 154, 2) and context[:, 0, 0].tolist() == [1, 2, 1, 2]
    assert torch.equal(context[0, 77:], context[0, 76:77].expand(77, 2))  # padded by repeating the last row


def test_extra_rows_are_broadcast_to_every_image() -> None:
    plan = plan_prompts("cat", "", 1)
    encoded = EncodedPlan(({"cat": _enc(1)},), {"": _enc(0)})
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]])
    rows = ScheduledConditioning(plan, encoded, 3, {"time_ids": time_ids}, {"time_ids": time_ids}).uncond_at(0)
    assert rows["time_ids"].shape == (3, 6)


def test_pad_to_tokens_keeps_longer_contexts() -> None:
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(pad_to_tokens(x, 2), x)
    assert pad_to_tokens(x, 5)[-1].tolist() == [4.0, 5.0]


class _CountingConditioner:
    """Stands in for TextConditioner: records each encode call's batch."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def encode(self, texts, options, *, negative=False):
        from types import SimpleNamespace

        self.calls.append((tuple(texts), negative))
        return SimpleNamespace(cond=torch.zeros(len(texts), 77, 2), pooled=None)


def test_batches_follow_a1111_and_are_cached_per_batch() -> None:
    from sdlab.pipeline.conditioning import encode_plan
    from sdlab.prompt.encode import EncodeOptions

    conditioner, cache = _CountingConditioner(), {}
    plan = plan_prompts("cat AND [cat:dog:2]", "ugly", 4)
    encoded = encode_plan(plan, conditioner, EncodeOptions(), cache)  # type: ignore[arg-type]
    assert conditioner.calls == [(("cat",), False), ((" cat", " dog"), False), (("ugly",), True)]
    assert set(encoded.parts[1]) == {" cat", " dog"}
    encode_plan(plan, conditioner, EncodeOptions(), cache)  # type: ignore[arg-type]
    assert len(conditioner.calls) == 3
