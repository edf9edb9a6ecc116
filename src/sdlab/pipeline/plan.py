"""Request planning: every check of a :class:`GenerationRequest` happens here, once, before any model runs.

:func:`plan_request` is pure: it takes the request and the facts about the loaded model it needs
(:class:`ModelFacts`) and returns a frozen :class:`Plan` or raises :class:`InvalidRequestError` with a
message that says what to fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sdlab.errors import InvalidRequestError
from sdlab.prompt.encode_emphasis import EMPHASIS_MODES
from sdlab.prompt.plan import PromptPlan, plan_prompts
from sdlab.rng import resolve_seeds as resolve_seed_lists
from sdlab.samplers.registry import resolve_sampler
from sdlab.samplers.schedules import SCHEDULES
from sdlab.types import GenerationRequest

MAX_SIDE = 8192  # pixels
MAX_BATCH = 64
MAX_STEPS = 10_000
RNG_SOURCES = ("GPU", "CPU", "NV")


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know about a loaded checkpoint (no modules, no tensors).

    ``family``: "sd1", "sd2", "sdxl", "sdxl_refiner"; ``native_size``: training resolution in pixels;
    ``vae_scale_factor``: pixels per latent cell (8 for SD, 2 for the embedded tiny model);
    ``latent_channels``: 4 for every SD family; ``max_clip_skip``: layers of the (first) text encoder.
    """

    family: str
    native_size: int
    vae_scale_factor: int
    latent_channels: int
    max_clip_skip: int


@dataclass(frozen=True)
class Plan:
    """A validated request with everything derived from it resolved.

    ``seeds[i]`` / ``subseeds[i]`` belong to image i (A1111: seed + i unless a variation strength is set);
    ``latent_shape`` is ``(C, H / f, W / f)``; ``sampler`` / ``schedule`` are canonical names.
    """

    request: GenerationRequest
    width: int
    height: int
    latent_shape: tuple[int, int, int]
    seeds: tuple[int, ...]
    subseeds: tuple[int, ...]
    sampler: str
    schedule: str
    second_order: bool
    prompts: PromptPlan

    @property
    def n_images(self) -> int:
        """Images in the whole request (batch size x batch count)."""
        return self.request.batch_size * self.request.n_iter

    def batch_seeds(self, iteration: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(seeds, subseeds) of sampler run ``iteration`` (0-based)."""
        size = self.request.batch_size
        lo, hi = iteration * size, (iteration + 1) * size
        return self.seeds[lo:hi], self.subseeds[lo:hi]


def _check_range(name: str, value: Any, lo: float, hi: float, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise InvalidRequestError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidRequestError(f"{name} must be between {lo:g} and {hi:g}, got {value}")


def _resolve_size(name: str, value: int | None, facts: ModelFacts) -> int:
    if value is None:
        return facts.native_size
    _check_range(name, value, 8, MAX_SIDE)
    step = max(8, facts.vae_scale_factor)
    if value % step:
        lower, upper = value - value % step, value - value % step + step
        raise InvalidRequestError(f"{name} must be a multiple of {step} pixels, got {value}; use {lower} or {upper}")
    return value


def _check_numbers(r: GenerationRequest, facts: ModelFacts) -> None:
    _check_range("steps", r.steps, 1, MAX_STEPS)
    _check_range("cfg_scale", r.cfg_scale, 0.0, 100.0, float)
    _check_range("batch_size", r.batch_size, 1, MAX_BATCH)
    _check_range("n_iter (batch count)", r.n_iter, 1, 100_000)
    _check_range("clip_skip", r.clip_skip, 1, facts.max_clip_skip)
    _check_range("subseed_strength", r.subseed_strength, 0.0, 1.0, float)
    _check_range("seed", r.seed, -1, 2**63 - 1)
    _check_range("subseed", r.subseed, -1, 2**63 - 1)
    _check_range("seed_resize_from_w", r.seed_resize_from_w, 0, MAX_SIDE)
    _check_range("seed_resize_from_h", r.seed_resize_from_h, 0, MAX_SIDE)
    _check_range("eta_noise_seed_delta", r.eta_noise_seed_delta, -(2**62), 2**62)
    _check_range("comma_padding_backtrack", r.comma_padding_backtrack, 0, 74)
    if r.eta is not None:
        _check_range("eta", r.eta, 0.0, 10.0, float)
    for name in ("prompt", "negative_prompt"):
        if not isinstance(getattr(r, name), str):
            raise InvalidRequestError(f"{name} must be a string, got {type(getattr(r, name)).__name__}")
    if r.rng not in RNG_SOURCES:
        raise InvalidRequestError(f"rng must be one of {', '.join(RNG_SOURCES)}, got {r.rng!r}")


def resolve_seeds(r: GenerationRequest, rand: random.Random | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A1111's seed rules for the whole request: -1 is random; image i gets seed + i (no variation strength)."""
    seeds, subseeds = resolve_seed_lists(r.seed, r.subseed, r.batch_size * r.n_iter, r.subseed_strength, rand)
    return tuple(seeds), tuple(subseeds)


def plan_request(
    request: GenerationRequest, facts: ModelFacts, *, rand: random.Random | None = None
) -> Plan:
    """Validate ``request`` against ``facts``; return the resolved :class:`Plan`."""
    if not isinstance(request, GenerationRequest):
        raise InvalidRequestError(f"expected a GenerationRequest, got {type(request).__name__}")
    _check_numbers(request, facts)
    EMPHASIS_MODES.get(request.emphasis)
    width = _resolve_size("width", request.width, facts)
    height = _resolve_size("height", request.height, facts)
    entry, schedule = resolve_sampler(request.sampler, request.schedule_type)
    SCHEDULES.get(schedule)
    seeds, subseeds = resolve_seeds(request, rand)
    prompts = plan_prompts(request.prompt, request.negative_prompt, request.steps, second_order=entry.second_order)
    f = facts.vae_scale_factor
    return Plan(
        request=request,
        width=width,
        height=height,
        latent_shape=(facts.latent_channels, height // f, width // f),
        seeds=seeds,
        subseeds=subseeds,
        sampler=entry.name,
        schedule=schedule,
        second_order=entry.second_order,
        prompts=prompts,
    )
