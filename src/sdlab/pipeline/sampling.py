"""One sampler run over one batch, for every pass (txt2img, img2img, inpaint, hires second pass).

A :class:`PassSpec` says what to sample (sampler, schedule, steps, prompts, latent size, denoising
strength); :func:`sample_pass` builds the image RNG, the scheduled conditioning, the guided model and the
:class:`~sdlab.samplers.driver.SamplingJob` the way A1111's ``processing.py`` does and runs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from sdlab.models.load import LoadedModel
from sdlab.pipeline.conditioning import BatchCache, ScheduledConditioning, encode_plan
from sdlab.pipeline.unet import UNetCall
from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.plan import PromptPlan
from sdlab.rng import ImageRNG, randn_local
from sdlab.samplers.denoiser import (
    CFGDenoiser,
    CFGEpsModel,
    CompVisDenoiser,
    CompVisVDenoiser,
    GuidanceCore,
    TimestepEpsDenoiser,
    TimestepVDenoiser,
    img2img_steps,
)
from sdlab.samplers.driver import SamplingJob, run_sampling
from sdlab.samplers.registry import SamplerEntry, resolve_sampler, sampler_timesteps, schedule_sigmas
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.samplers.types import StepInfo
from sdlab.types import GenerationRequest, ProgressCallback, ProgressEvent

#: SDXL refiner aesthetic scores (A1111 options ``sdxl_refiner_high/low_aesthetic_score``).
AESTHETIC_POSITIVE, AESTHETIC_NEGATIVE = 6.0, 2.5


@dataclass(frozen=True)
class RunContext:
    """Progress callback (per sampler step) and a cancel event polled before every model call."""

    progress: ProgressCallback | None = None
    cancel: threading.Event | None = None


@dataclass
class TextCache:
    """Encoded text batches of one model for fixed encode options, keyed by (texts, negative)."""

    options: EncodeOptions
    entries: BatchCache = field(default_factory=dict)


@dataclass(frozen=True)
class Txt2ImgRun:
    """Everything a run needs besides the plan (the name is historical: every pass uses it).

    ``refiner``: the SDXL refiner's run (its model, conditioner and text cache), when one is requested;
    ``image_upscaler``: ``(image, name, scale) -> image`` for hires image upscalers (None: built-in
    Lanczos / Nearest only; the engine binds ``sdlab.post.upscale.upscale_image``).
    """

    model: LoadedModel
    model_name: str
    conditioner: TextConditioner
    cache: TextCache
    device: torch.device
    dtype: torch.dtype
    extra_params: Mapping[str, object] = field(default_factory=dict)
    refiner: Txt2ImgRun | None = None
    image_upscaler: Callable[..., Any] | None = None


@dataclass(frozen=True)
class PassSpec:
    """One sampler pass over a batch.

    ``steps``: the requested steps of this pass; ``width`` / ``height``: its size in pixels (SDXL time
    ids); ``latent_shape``: ``(C, h, w)``; ``denoising_strength`` None = txt2img (start from noise),
    else img2img with A1111's truncation (``fix_steps`` = option ``img2img_fix_steps``);
    ``noise_multiplier``: A1111's ``initial_noise_multiplier`` (img2img only).
    """

    sampler: str
    schedule: str
    steps: int
    prompts: PromptPlan
    width: int
    height: int
    latent_shape: tuple[int, int, int]
    denoising_strength: float | None = None
    fix_steps: bool = False
    noise_multiplier: float = 1.0


@dataclass(frozen=True)
class BatchInputs:
    """Per-batch tensors of an img2img pass: the init latent ``[B, C, h, w]``, the repaint mask
    ``[1, 1, h, w]`` (1 = repaint; None = everything) and the extra UNet channels (inpainting models)."""

    init_latent: Tensor | None = None
    repaint: Tensor | None = None
    concat: Tensor | None = None


#: Wraps the guided model of a pass (the SDXL refiner switch): (core, guided, entry, sigma model) -> model.
GuidedWrapper = Callable[[GuidanceCore, Any, SamplerEntry, SigmaModel], Any]


def noise_source(request_rng: str, device: torch.device) -> str:
    """A1111's "GPU" source draws on the compute device; on a CPU device that is the CPU generator."""
    return "CPU" if request_rng == "GPU" and device.type == "cpu" else request_rng


def image_rng(r: GenerationRequest, shape: tuple[int, ...], seeds: tuple[int, ...], subseeds: tuple[int, ...] | None,
              run: Txt2ImgRun, *, variations: bool = True) -> ImageRNG:
    """A1111's ``ImageRNG`` for a batch (``variations`` False: no subseeds / seed resize, as
    ``create_random_tensors`` is called for "latent noise")."""
    return ImageRNG(shape, seeds, subseeds=subseeds if variations else None,
                    subseed_strength=r.subseed_strength if variations else 0.0,
                    seed_resize_from_w=r.seed_resize_from_w if variations else 0,
                    seed_resize_from_h=r.seed_resize_from_h if variations else 0,
                    scale_factor=run.model.vae_scale_factor, source=noise_source(r.rng, run.device),
                    ensd=r.eta_noise_seed_delta, device=run.device)


def inner_model(entry: SamplerEntry, model: LoadedModel, unet: UNetCall, sigmas: SigmaModel) -> Callable:
    """The UNet wrapped for the sampler kind (k-diffusion sigma wrappers, timestep wrappers, LCM)."""
    v = model.prediction_type == "v_prediction"
    if entry.kind == "timestep":
        return TimestepVDenoiser(unet, model.alphas_cumprod) if v else TimestepEpsDenoiser(unet)
    if entry.kind == "lcm":
        from sdlab.samplers.lcm import LCMDenoiser  # noqa: PLC0415 - only for LCM

        return LCMDenoiser.from_alphas_cumprod(unet, model.alphas_cumprod)
    return CompVisVDenoiser(unet, sigmas) if v else CompVisDenoiser(unet, sigmas)


def full_schedule(r: GenerationRequest, entry: SamplerEntry, schedule: str, steps: int, sigmas: SigmaModel,
                  family: str) -> Tensor:
    """The full sigmas (or timesteps) for ``steps`` steps, with the request's schedule overrides."""
    if entry.kind == "timestep":
        return sampler_timesteps(entry.name, steps)
    return schedule_sigmas(entry, schedule, steps, sigmas, sigma_min=r.sigma_min, sigma_max=r.sigma_max,
                           rho=r.rho, family=family)


def sampler_kwargs(r: GenerationRequest) -> dict[str, object]:
    """The request's sampler option overrides (None = the sampler's A1111 default)."""
    return {"eta": r.eta, "s_churn": r.s_churn or None, "s_tmin": r.s_tmin or None,
            "s_noise": None if r.s_noise == 1.0 else r.s_noise}


def time_ids(r: GenerationRequest, width: int, height: int, *, aesthetic: float | None = None) -> Tensor:
    """SDXL micro-conditioning (height, width order): base ``[1, 6]`` original size, crop top-left,
    target size; refiner (``aesthetic`` given) ``[1, 5]`` original size, crop top-left, aesthetic score."""
    original = r.original_size or (width, height)
    target = r.target_size or (width, height)
    top, left = r.crops_coords_top_left
    if aesthetic is not None:
        return torch.tensor([[original[1], original[0], top, left, aesthetic]], dtype=torch.float32)
    return torch.tensor([[original[1], original[0], top, left, target[1], target[0]]], dtype=torch.float32)


def scheduled_conditioning(run: Txt2ImgRun, r: GenerationRequest, spec: PassSpec, batch: int) -> ScheduledConditioning:
    """Encode the pass's prompt plan with ``run``'s text encoders (SDXL: plus time ids; refiner: aesthetic ids)."""
    encoded = encode_plan(spec.prompts, run.conditioner, run.cache.options, run.cache.entries)
    family = run.model.family
    if family == "sdxl":
        ids = time_ids(r, spec.width, spec.height).to(run.device)
        cond = uncond = {"time_ids": ids}
    elif family == "sdxl-refiner":
        cond = {"time_ids": time_ids(r, spec.width, spec.height, aesthetic=AESTHETIC_POSITIVE).to(run.device)}
        uncond = {"time_ids": time_ids(r, spec.width, spec.height, aesthetic=AESTHETIC_NEGATIVE).to(run.device)}
    else:
        cond = uncond = {}
    return ScheduledConditioning(spec.prompts, encoded, batch, cond, uncond)


def pass_steps(spec: PassSpec) -> tuple[int, int]:
    """(schedule steps, t_enc): ``(steps, 0)`` for txt2img, A1111's ``setup_img2img_steps`` otherwise."""
    if spec.denoising_strength is None:
        return spec.steps, 0
    return img2img_steps(spec.steps, spec.denoising_strength, spec.fix_steps)


@dataclass
class MaskedEpsModel:
    """A1111's timestep-sampler inpainting (``mask_before_denoising``): the model sees
    ``init * keep + repaint * x`` (the *clean* init latent in the kept area)."""

    model: CFGEpsModel
    init_latent: Tensor
    repaint: Tensor

    @property
    def step(self) -> int:
        """Guided model calls so far."""
        return self.model.step

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Any:
        return self.model(self.init_latent * (1 - self.repaint) + self.repaint * x, t, **kwargs)


def _progress(ctx: RunContext, total: int, iteration: int, n_iter: int) -> Callable[[StepInfo], None] | None:
    if ctx.progress is None:
        return None
    report = ctx.progress

    def callback(info: StepInfo) -> None:
        report(ProgressEvent(min(info.i + 1, total), total, iteration, n_iter, float(info.sigma)))

    return callback


def extra_channels(model: LoadedModel) -> int:
    """UNet input channels beyond the latent's (0 for ordinary models, 5 for SD inpainting, 4 for ip2p)."""
    return int(model.unet.config.in_channels) - model.latent_channels


def is_edit_model(model: LoadedModel) -> bool:
    """instruct-pix2pix: the UNet takes the latent plus an image latent (8 channels for SD)."""
    return extra_channels(model) == model.latent_channels


def is_inpainting_model(model: LoadedModel) -> bool:
    """An inpainting UNet: the latent plus a mask channel and a masked-image latent (9 channels for SD)."""
    return extra_channels(model) == model.latent_channels + 1


def infotext_image_cfg_scale(model: LoadedModel, r: GenerationRequest) -> float | None:
    """A1111 keeps ``image_cfg_scale`` only for img2img with an instruct-pix2pix model (else None); it is
    written to the infotext as "Image CFG scale", and guides with three passes when not 1."""
    return r.image_cfg_scale if r.is_img2img and is_edit_model(model) else None


def sample_pass(run: Txt2ImgRun, r: GenerationRequest, spec: PassSpec, seeds: tuple[int, ...],
                subseeds: tuple[int, ...], iteration: int, ctx: RunContext, inputs: BatchInputs = BatchInputs(),
                wrap: GuidedWrapper | None = None) -> Tensor:
    """Sample one batch of ``len(seeds)`` images; returns latents ``[B, C, h, w]``.

    txt2img: ``x = noise * sigmas[0]``; img2img: fresh noise from the same seeds times
    ``noise_multiplier``, the schedule truncated as A1111 (see :mod:`sdlab.samplers.driver`); with a
    repaint mask the init latent is blended back at every step and once more after sampling.
    """
    entry, _ = resolve_sampler(spec.sampler, spec.schedule)
    sigma_model = SigmaModel.from_alphas_cumprod(run.model.alphas_cumprod)
    rng = image_rng(r, spec.latent_shape, seeds, subseeds, run)
    cond = scheduled_conditioning(run, r, spec, len(seeds))
    unet = UNetCall(run.model.unet, run.dtype, inputs.concat)
    edit_scale = infotext_image_cfg_scale(run.model, r)
    core = GuidanceCore(inner_model(entry, run.model, unet, sigma_model), cond.cond_at, cond.uncond_at, r.cfg_scale,
                        image_cfg_scale=None if edit_scale == 1.0 else edit_scale)
    init, repaint = inputs.init_latent, inputs.repaint
    keep = None if repaint is None else (1 - repaint).to(run.device)
    guided: Any
    if entry.kind == "timestep":
        guided = CFGEpsModel(core)
        if init is not None and repaint is not None:
            guided = MaskedEpsModel(guided, init, repaint.to(run.device))
    else:
        guided = CFGDenoiser(core, init_latent=init, mask=keep)
    if wrap is not None:
        guided = wrap(core, guided, entry, sigma_model)
    steps, t_enc = pass_steps(spec)
    schedule = full_schedule(r, entry, spec.schedule, steps, sigma_model, run.model.family)
    noise = rng.next()
    if init is not None and spec.noise_multiplier != 1.0:
        noise = noise * spec.noise_multiplier
    cancel = ctx.cancel.is_set if ctx.cancel is not None else None
    source = noise_source(r.rng, run.device)
    local = None if source == "CPU" else partial(randn_local, source)
    total = steps if init is None else (t_enc if entry.kind == "timestep" else t_enc + 1)
    callback = _progress(ctx, max(total, 1), iteration, r.n_iter)
    if init is not None and t_enc == 0:
        out = _zero_strength(entry, schedule, steps, init, noise, guided, rng.next, run.model.alphas_cumprod,
                             callback, cancel, local, seeds, r)
    else:
        job = SamplingJob(entry=entry, schedule=schedule, steps=steps,
                          model_sigma_range=(float(sigma_model.sigma_min), float(sigma_model.sigma_max)),
                          alphas_cumprod=run.model.alphas_cumprod, init_latent=init, t_enc=t_enc,
                          seeds=tuple(seeds), options=sampler_kwargs(r))
        out = run_sampling(job, guided, noise, rng.next, callback=callback, cancel=cancel, randn_local=local)
    if init is not None and keep is not None:
        out = out * (1 - keep) + init * keep
    return out


def _zero_strength(entry: SamplerEntry, schedule: Tensor, steps: int, init: Tensor, noise: Tensor, guided: Any,
                   next_noise: Any, ac: Tensor, callback: Any, cancel: Any, local: Any, seeds: tuple[int, ...],
                   r: GenerationRequest) -> Tensor:
    """A1111 at ``t_enc = 0`` (denoising strength below 1/steps): k-diffusion samplers walk
    ``sigmas[steps - 1:]`` (one step from the smallest sigma); timestep samplers make no model call and
    return the init latent noised to ``T[0]``."""
    if entry.kind == "timestep":
        t0 = schedule[0]
        return init * torch.sqrt(ac[t0]) + noise * torch.sqrt(1 - ac[t0])
    # the driver truncates at steps - t_enc - 1; steps + 1 with t_enc 1 gives the same start, steps - 1
    job = SamplingJob(entry=entry, schedule=schedule, steps=steps + 1, alphas_cumprod=ac, init_latent=init, t_enc=1,
                      seeds=tuple(seeds), options=sampler_kwargs(r))
    return run_sampling(job, guided, noise, next_noise, callback=callback, cancel=cancel, randn_local=local)
