"""The prompt plan of one sampling pass: tags, AND parts with their schedules, the negative schedule.

Mirrors how A1111 v1.10.1 prepares prompts for a pass:

1. Extra-network tags are parsed and removed from the *positive* prompt only (all AND parts at once, since
   the whole prompt is parsed before splitting). Tags in the negative prompt are not parsed: A1111 encodes
   them as literal text, and so does this plan.
2. The positive prompt is split on ``AND`` (:mod:`sdlab.prompt.multicond`), then each part is scheduled;
   the negative prompt is scheduled whole (``AND`` is plain text there).
3. Schedules run over the sampler's total model-call count: ``steps``, or ``2*steps`` for second-order
   samplers (A1111's ``prompt_schedule_total_steps``). For a hires pass, ``hires_steps`` selects A1111's
   hires timeline (integers count from the start of the first pass, fractions 1.0..2.0 span the hires pass).
4. During sampling, A1111's CFG denoiser counts its calls from 0 and at call ``k`` uses the first schedule
   entry with ``k <= end_at_step``; past the last entry it falls back to the *first* entry
   (:meth:`PromptPlan.cond_at`, :meth:`PromptPlan.uncond_at`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sdlab.errors import InvalidRequestError
from sdlab.prompt.extra_networks import ExtraNetworkTag, parse_extra_networks
from sdlab.prompt.multicond import split_and
from sdlab.prompt.schedules import Schedule, prompt_schedule


@dataclass(frozen=True)
class WeightedText:
    """A text to condition on and its AND weight (CFG scale multiplier; 1.0 without ``:weight``)."""

    text: str
    weight: float


@dataclass(frozen=True)
class ScheduledPart:
    """One AND part of the positive prompt: its text (before scheduling), weight and schedule
    ``((end_at_step, text), ...)``."""

    text: str
    weight: float
    schedule: Schedule


def entry_at(schedule: Schedule, step: int) -> str:
    """The text A1111's denoiser uses at call ``step`` (0-based): the first entry with
    ``step <= end_at_step``, or the first entry when ``step`` is past the end."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidRequestError(f"sampler step must be a whole number >= 0, got {step!r}")
    for end_at_step, text in schedule:
        if step <= end_at_step:
            return text
    return schedule[0][1]


@dataclass(frozen=True)
class PromptPlan:
    """Everything prompt-side that one sampling pass needs; build it with :func:`plan_prompts`.

    ``prompt`` is the positive prompt with tags removed; ``total_steps`` the schedule length (model calls);
    ``parts`` the AND parts in prompt order; ``negative`` the negative prompt's schedule.
    """

    prompt: str
    negative_prompt: str
    total_steps: int
    tags: tuple[ExtraNetworkTag, ...]
    unknown_tags: tuple[str, ...]
    parts: tuple[ScheduledPart, ...]
    negative: Schedule

    @property
    def distinct_texts(self) -> tuple[str, ...]:
        """Every text that must be encoded, each once, positive texts first, in order of appearance."""
        texts = [text for batch in self.encode_batches for text in batch]
        return tuple(dict.fromkeys(texts))

    @property
    def encode_batches(self) -> tuple[tuple[str, ...], ...]:
        """The texts A1111 encodes together: one batch per distinct AND-part text (its schedule texts,
        repeats kept), then the negative schedule. Batches matter for "Original" emphasis, whose mean
        is taken over the whole batch."""
        batches: dict[str, tuple[str, ...]] = {}
        for part in self.parts:
            batches.setdefault(part.text, tuple(text for _, text in part.schedule))
        return (*batches.values(), tuple(text for _, text in self.negative))

    def cond_at(self, step: int) -> tuple[WeightedText, ...]:
        """For denoiser call ``step`` (0-based), each AND part's text with its weight, in prompt order."""
        return tuple(WeightedText(entry_at(part.schedule, step), part.weight) for part in self.parts)

    def uncond_at(self, step: int) -> str:
        """For denoiser call ``step`` (0-based), the negative prompt's text."""
        return entry_at(self.negative, step)


def _total(steps: int, second_order: bool, what: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidRequestError(f"{what} must be a whole number >= 1, got {steps!r}")
    return steps * 2 if second_order else steps


def plan_prompts(
    prompt: str,
    negative_prompt: str,
    steps: int,
    *,
    hires_steps: int | None = None,
    second_order: bool = False,
    use_old_scheduling: bool = False,
    first_pass_second_order: bool | None = None,
) -> PromptPlan:
    """Plan the prompts of one pass.

    ``steps``: the first pass's sampling steps (>= 1). ``hires_steps``: given for the hires pass, its
    resolved step count (A1111: hires steps, or ``steps`` when those are 0); the plan is then the hires
    pass's. ``second_order`` doubles the counts of the pass's sampler (Heun, DPM2, DPM2 a, DPM++ 2S a,
    DPM++ SDE, Restart); ``first_pass_second_order`` overrides it for the first pass when the hires pass
    uses another sampler. ``use_old_scheduling``: A1111's "old prompt editing timelines" option.
    """
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise InvalidRequestError("prompt and negative prompt must be strings")
    first_order = second_order if first_pass_second_order is None else first_pass_second_order
    base = _total(steps, first_order, "steps")
    hires = None if hires_steps is None else _total(hires_steps, second_order, "hires steps")
    extra = parse_extra_networks(prompt)
    parts = tuple(
        ScheduledPart(sub.text, sub.weight, prompt_schedule(sub.text, base, hires, use_old_scheduling))
        for sub in split_and(extra.text)
    )
    negative = prompt_schedule(negative_prompt, base, hires, use_old_scheduling)
    total = base if hires is None or use_old_scheduling else hires
    return PromptPlan(extra.text, negative_prompt, total, extra.tags, extra.unknown, parts, negative)
