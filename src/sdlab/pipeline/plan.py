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
from sdlab.pipeline.hires import HiresPlan, hires_latent_shape, hires_target, resolve_upscaler
from sdlab.pipeline.images import RESIZE_MODES, alpha_channel, to_rgb
from sdlab.pipeline.inpaint import INPAINT_AREAS, MASKED_CONTENT, check_mask_size
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
    hires: HiresPlan | None = None

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
    if r.image_cfg_scale is not None:
        _check_range("image_cfg_scale", r.image_cfg_scale, 0.0, 100.0, float)
    for name in ("prompt", "negative_prompt"):
        if not isinstance(getattr(r, name), str):
            raise InvalidRequestError(f"{name} must be a string, got {type(getattr(r, name)).__name__}")
    if r.rng not in RNG_SOURCES:
        raise InvalidRequestError(f"rng must be one of {', '.join(RNG_SOURCES)}, got {r.rng!r}")


def _check_img2img(r: GenerationRequest) -> None:
    """init images, strength, resize mode, noise multiplier and the inpainting settings."""
    if not isinstance(r.init_images, tuple):
        raise InvalidRequestError("init_images must be a tuple of PIL images")
    _check_range("denoising_strength", r.denoising_strength, 0.0, 1.0, float)
    RESIZE_MODES.get(r.resize_mode)
    _check_range("initial_noise_multiplier", r.initial_noise_multiplier, 0.0, 10.0, float)
    for k, image in enumerate(r.init_images):
        to_rgb(image, f"init image {k + 1}")  # refuses unusable modes with a message
    if len(r.init_images) > r.batch_size:
        raise InvalidRequestError(
            f"{len(r.init_images)} init images for batch size {r.batch_size}; give one image or at most batch_size"
        )
    if r.img2img_fix_steps and r.denoising_strength == 0 and r.init_images:
        raise InvalidRequestError("img2img_fix_steps with denoising strength 0 leaves no steps; raise the strength")
    if not r.is_inpaint:
        return
    if not r.init_images:
        raise InvalidRequestError("a mask needs an init image (init_images) to inpaint")
    if r.mask is not None and r.mask_from_alpha:
        raise InvalidRequestError("give either a mask image or mask_from_alpha, not both")
    first = r.init_images[0]
    if r.mask is not None:
        from PIL import Image  # noqa: PLC0415 - only to check the type

        if not isinstance(r.mask, Image.Image):
            raise InvalidRequestError(f"mask must be a PIL image, got {type(r.mask).__name__}")
        check_mask_size(r.mask, first)
    elif alpha_channel(first) is None:
        raise InvalidRequestError("mask_from_alpha: the init image has no transparent pixels; give a mask image")
    _check_range("mask_blur", r.mask_blur, 0, 256)
    _check_range("inpaint_full_res_padding", r.inpaint_full_res_padding, 0, MAX_SIDE)
    _check_range("inpainting_mask_weight", r.inpainting_mask_weight, 0.0, 1.0, float)
    MASKED_CONTENT.get(r.inpainting_fill)
    if r.inpaint_area not in INPAINT_AREAS:
        raise InvalidRequestError(f"inpaint_area must be one of {', '.join(INPAINT_AREAS)}, got {r.inpaint_area!r}")
    if RESIZE_MODES.canonical(r.resize_mode) == "Just resize (latent upscale)":
        raise InvalidRequestError("resize mode 'Just resize (latent upscale)' cannot be used with a mask; pick another")


def _default_size(r: GenerationRequest, facts: ModelFacts) -> tuple[int | None, int | None]:
    """img2img without a size: the init image's size rounded down to the size step."""
    if not r.init_images:
        return r.width, r.height
    step = max(8, facts.vae_scale_factor)
    w, h = r.init_images[0].size
    return (r.width if r.width is not None else max(step, w - w % step),
            r.height if r.height is not None else max(step, h - h % step))


def plan_hires(r: GenerationRequest, facts: ModelFacts, width: int, height: int, sampler: str,
               first_second_order: bool, extra_upscalers: tuple[str, ...] = ()) -> HiresPlan:
    """Validate and resolve ``r.hires`` for a first pass of ``width x height``."""
    spec = r.hires
    assert spec is not None
    if r.init_images:
        raise InvalidRequestError("hires fix applies to txt2img only; for img2img raise width/height instead")
    _check_range("hires scale", spec.scale, 0.0, 16.0, float)
    _check_range("hires resize_x", spec.resize_x, 0, MAX_SIDE)
    _check_range("hires resize_y", spec.resize_y, 0, MAX_SIDE)
    _check_range("hires second_pass_steps", spec.second_pass_steps, 0, MAX_STEPS)
    _check_range("hires denoising_strength", spec.denoising_strength, 0.0, 1.0, float)
    if spec.resize_x == 0 and spec.resize_y == 0 and spec.scale <= 0:
        raise InvalidRequestError("hires scale must be > 0 (or give resize_x / resize_y)")
    upscaler, mode = resolve_upscaler(spec.upscaler, extra_upscalers)
    f = facts.vae_scale_factor
    target = hires_target(width, height, spec.scale, spec.resize_x, spec.resize_y, f)
    shape = hires_latent_shape(target, facts.latent_channels, f)
    if min(shape[1:]) < 1 or max(shape[1:]) * f > MAX_SIDE:
        raise InvalidRequestError(f"hires size {target.width}x{target.height} is outside 8..{MAX_SIDE} pixels")
    entry, schedule = resolve_sampler(spec.sampler or sampler,
                                      spec.schedule_type if spec.schedule_type is not None else r.schedule_type)
    SCHEDULES.get(schedule)
    steps = spec.second_pass_steps or r.steps
    prompt = spec.prompt or r.prompt
    negative = spec.negative_prompt or r.negative_prompt
    prompts = plan_prompts(prompt, negative, r.steps, hires_steps=steps, second_order=entry.second_order,
                           first_pass_second_order=first_second_order)
    return HiresPlan(spec, target, upscaler, mode, entry.name, schedule, steps, prompt, negative, prompts, shape,
                     shape[2] * f, shape[1] * f)


def _check_refiner(r: GenerationRequest) -> None:
    if r.refiner is None:
        return
    if not isinstance(r.refiner.checkpoint, str) or not r.refiner.checkpoint:
        raise InvalidRequestError("refiner checkpoint must be a checkpoint name")
    _check_range("refiner switch_at", r.refiner.switch_at, 0.0, 1.0, float)


def resolve_seeds(r: GenerationRequest, rand: random.Random | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A1111's seed rules for the whole request: -1 is random; image i gets seed + i (no variation strength)."""
    seeds, subseeds = resolve_seed_lists(r.seed, r.subseed, r.batch_size * r.n_iter, r.subseed_strength, rand)
    return tuple(seeds), tuple(subseeds)


def plan_request(
    request: GenerationRequest, facts: ModelFacts, *, rand: random.Random | None = None,
    extra_upscalers: tuple[str, ...] = (),
) -> Plan:
    """Validate ``request`` against ``facts``; return the resolved :class:`Plan`.

    ``extra_upscalers``: image upscaler names available besides Lanczos / Nearest (model upscalers).
    When fewer init images than ``batch_size`` are given (but more than one), ``plan.request`` has
    ``batch_size`` = the number of images, as A1111 does.
    """
    if not isinstance(request, GenerationRequest):
        raise InvalidRequestError(f"expected a GenerationRequest, got {type(request).__name__}")
    _check_numbers(request, facts)
    _check_img2img(request)
    _check_refiner(request)
    if 1 < len(request.init_images) < request.batch_size:
        request = request.replace(batch_size=len(request.init_images))  # A1111: batch size = number of images
    EMPHASIS_MODES.get(request.emphasis)
    default_w, default_h = _default_size(request, facts)
    width = _resolve_size("width", default_w, facts)
    height = _resolve_size("height", default_h, facts)
    entry, schedule = resolve_sampler(request.sampler, request.schedule_type)
    SCHEDULES.get(schedule)
    seeds, subseeds = resolve_seeds(request, rand)
    prompts = plan_prompts(request.prompt, request.negative_prompt, request.steps, second_order=entry.second_order)
    f = facts.vae_scale_factor
    hires = None if request.hires is None else plan_hires(request, facts, width, height, entry.name,
                                                           entry.second_order, extra_upscalers)
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
        hires=hires,
    )
