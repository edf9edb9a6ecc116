"""The txt2img pass: planned request + loaded model -> images with seeds and infotext (A1111 processing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from sdlab.infotext import InfotextSettings, create_infotext, infotext_params
from sdlab.models.load import LoadedModel
from sdlab.pipeline.conditioning import BatchCache, ScheduledConditioning, encode_plan
from sdlab.pipeline.decode import decode_batch
from sdlab.pipeline.plan import Plan
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
)
from sdlab.samplers.driver import SamplingJob, run_sampling
from sdlab.samplers.registry import SamplerEntry, resolve_sampler, sampler_timesteps, schedule_infotext, schedule_sigmas
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.samplers.types import StepInfo
from sdlab.types import GeneratedImage, ProgressCallback, ProgressEvent

VERSION_TAG = "sdlab-0.1.0"


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


def noise_source(request_rng: str, device: torch.device) -> str:
    """A1111's "GPU" source draws on the compute device; on a CPU device that is the CPU generator."""
    return "CPU" if request_rng == "GPU" and device.type == "cpu" else request_rng


def _inner(entry: SamplerEntry, model: LoadedModel, unet: UNetCall, sigmas: SigmaModel) -> Callable:
    v = model.prediction_type == "v_prediction"
    if entry.kind == "timestep":
        return TimestepVDenoiser(unet, model.alphas_cumprod) if v else TimestepEpsDenoiser(unet)
    if entry.kind == "lcm":
        from sdlab.samplers.lcm import LCMDenoiser  # noqa: PLC0415 - only for LCM

        return LCMDenoiser.from_alphas_cumprod(unet, model.alphas_cumprod)
    return CompVisVDenoiser(unet, sigmas) if v else CompVisDenoiser(unet, sigmas)


def _schedule(plan: Plan, entry: SamplerEntry, sigmas: SigmaModel, family: str) -> Tensor:
    r = plan.request
    if entry.kind == "timestep":
        return sampler_timesteps(entry.name, r.steps)
    return schedule_sigmas(entry, plan.schedule, r.steps, sigmas, sigma_min=r.sigma_min, sigma_max=r.sigma_max,
                           rho=r.rho, family=family)


def _options(plan: Plan) -> dict[str, object]:
    r = plan.request
    return {"eta": r.eta, "s_churn": r.s_churn or None, "s_tmin": r.s_tmin or None, "s_noise": None if r.s_noise == 1.0 else r.s_noise}


def _progress(ctx: RunContext, plan: Plan, iteration: int) -> Callable[[StepInfo], None] | None:
    if ctx.progress is None:
        return None
    steps, n_iter, report = plan.request.steps, plan.request.n_iter, ctx.progress

    def callback(info: StepInfo) -> None:
        report(ProgressEvent(min(info.i + 1, steps), steps, iteration, n_iter, float(info.sigma)))

    return callback


def sdxl_time_ids(plan: Plan) -> Tensor:
    """SDXL micro-conditioning ``[1, 6]``: original size, crop top-left, target size, each (height, width)."""
    r = plan.request
    original = r.original_size or (plan.width, plan.height)
    target = r.target_size or (plan.width, plan.height)
    top, left = r.crops_coords_top_left
    return torch.tensor([[original[1], original[0], top, left, target[1], target[0]]], dtype=torch.float32)


@dataclass(frozen=True)
class Txt2ImgRun:
    """Everything a txt2img run needs besides the plan."""

    model: LoadedModel
    model_name: str
    conditioner: TextConditioner
    cache: TextCache
    device: torch.device
    dtype: torch.dtype
    extra_params: Mapping[str, object] = field(default_factory=dict)


def txt2img_image_conditioning(model: LoadedModel, plan: Plan, device: torch.device) -> Tensor | None:
    """Extra UNet input channels for txt2img (A1111 ``txt2img_image_conditioning``), or None.

    Inpainting UNets (9 channels) get a full mask (1 channel, all ones) plus the latent of a mid-grey
    image; instruct-pix2pix UNets (8 channels) get the grey latent alone. The VAE posterior's mean is used
    (A1111's "Full" encoder samples the posterior with the global RNG; its spread is negligible here).
    """
    extra = int(model.unet.config.in_channels) - model.latent_channels
    if extra <= 0:
        return None
    vae = model.vae
    dtype = next(vae.parameters()).dtype
    grey = torch.zeros(1, 3, plan.height, plan.width, device=device, dtype=dtype)  # 0.5 in [0, 1] is 0 in [-1, 1]
    with torch.inference_mode():
        latent = vae.encode(grey).latent_dist.mean.float() * model.latent_scaling_factor
    mask = torch.ones_like(latent[:, :1])
    return torch.cat([mask, latent], dim=1) if extra == model.latent_channels + 1 else latent


def _conditioning(run: Txt2ImgRun, plan: Plan, prompts: PromptPlan) -> ScheduledConditioning:
    encoded = encode_plan(prompts, run.conditioner, run.cache.options, run.cache.entries)
    extra = {"time_ids": sdxl_time_ids(plan).to(run.device)} if run.model.family == "sdxl" else {}
    return ScheduledConditioning(prompts, encoded, plan.request.batch_size, extra, extra)


def _sample_batch(run: Txt2ImgRun, plan: Plan, prompts: PromptPlan, iteration: int, ctx: RunContext) -> Tensor:
    r = plan.request
    entry, _ = resolve_sampler(plan.sampler, plan.schedule)
    sigma_model = SigmaModel.from_alphas_cumprod(run.model.alphas_cumprod)
    seeds, subseeds = plan.batch_seeds(iteration)
    source = noise_source(r.rng, run.device)
    rng = ImageRNG(plan.latent_shape, seeds, subseeds=subseeds, subseed_strength=r.subseed_strength,
                   seed_resize_from_w=r.seed_resize_from_w, seed_resize_from_h=r.seed_resize_from_h,
                   scale_factor=run.model.vae_scale_factor, source=source, ensd=r.eta_noise_seed_delta,
                   device=run.device)
    cond = _conditioning(run, plan, prompts)
    concat = txt2img_image_conditioning(run.model, plan, run.device)
    core = GuidanceCore(_inner(entry, run.model, UNetCall(run.model.unet, run.dtype, concat), sigma_model),
                        cond.cond_at, cond.uncond_at, r.cfg_scale)
    guided = CFGEpsModel(core) if entry.kind == "timestep" else CFGDenoiser(core)
    job = SamplingJob(entry=entry, schedule=_schedule(plan, entry, sigma_model, run.model.family), steps=r.steps,
                      model_sigma_range=(float(sigma_model.sigma_min), float(sigma_model.sigma_max)),
                      alphas_cumprod=run.model.alphas_cumprod, seeds=tuple(seeds), options=_options(plan))
    noise = rng.next()
    cancel = ctx.cancel.is_set if ctx.cancel is not None else None
    local = None if source == "CPU" else partial(randn_local, source)
    return run_sampling(job, guided, noise, rng.next, callback=_progress(ctx, plan, iteration), cancel=cancel,
                        randn_local=local)


#: sampler option -> (A1111 infotext key, value A1111 leaves unwritten)
_OPTION_KEYS: tuple[tuple[str, str, float], ...] = (
    ("s_churn", "Sigma churn", 0.0), ("s_tmin", "Sigma tmin", 0.0), ("s_noise", "Sigma noise", 1.0),
)
_ETA_KEYS = {"ancestral": "Eta", "ddim": "Eta DDIM"}


def sampler_infotext(entry: SamplerEntry, plan: Plan) -> dict[str, object]:
    """What A1111's samplers add to ``extra_generation_params``: schedule type and overrides, non-default
    eta (``Eta`` / ``Eta DDIM``) and churn settings of the samplers that take them."""
    r = plan.request
    params: dict[str, object] = dict(schedule_infotext(entry, plan.schedule))
    for key, value in (("Schedule max sigma", r.sigma_max), ("Schedule min sigma", r.sigma_min), ("Schedule rho", r.rho)):
        if value:
            params[key] = value
    defaults = dict(entry.options)
    if entry.eta_option and r.eta is not None and r.eta != defaults.get("eta"):
        params[_ETA_KEYS[entry.eta_option]] = r.eta
    for option, key, default in _OPTION_KEYS:
        value = getattr(r, option)
        if option in defaults and value != default:
            params[key] = value
    return params


def _infotext(run: Txt2ImgRun, plan: Plan, prompts: PromptPlan, seed: int, subseed: int) -> str:
    r = plan.request
    entry, _ = resolve_sampler(plan.sampler, plan.schedule)
    extra = dict(run.extra_params)
    extra.update(sampler_infotext(entry, plan))
    hashes = run.model.hashes
    settings = InfotextSettings(
        steps=r.steps, sampler_name=entry.name, cfg_scale=r.cfg_scale, seed=seed, width=plan.width, height=plan.height,
        scheduler=extra.pop("Schedule type", None),
        model_hash=None if hashes is None else hashes.short, model_name=run.model_name,
        subseed=subseed, subseed_strength=r.subseed_strength,
        seed_resize_from=(r.seed_resize_from_w, r.seed_resize_from_h) if r.seed_resize_from_w > 0 else (-1, -1),
        clip_skip=r.clip_skip, ensd=r.eta_noise_seed_delta, eta=r.eta, rng=r.rng,
        extra=tuple(extra.items()), version=VERSION_TAG,
    )
    return create_infotext(r.prompt, r.negative_prompt, infotext_params(settings))


def txt2img(run: Txt2ImgRun, plan: Plan, ctx: RunContext) -> tuple[list[GeneratedImage], dict[str, float]]:
    """Run every batch of ``plan``; images come back in seed order with their infotexts."""
    r = plan.request
    prompts = plan.prompts
    images: list[GeneratedImage] = []
    timings = {"sampling": 0.0, "decode": 0.0}
    for iteration in range(r.n_iter):
        start = time.perf_counter()
        latents = _sample_batch(run, plan, prompts, iteration, ctx)
        mid = time.perf_counter()
        pictures = decode_batch(run.model.vae, latents, run.model.latent_scaling_factor)
        timings["sampling"] += mid - start
        timings["decode"] += time.perf_counter() - mid
        seeds, subseeds = plan.batch_seeds(iteration)
        for pic, seed, subseed in zip(pictures, seeds, subseeds):
            text = _infotext(run, plan, prompts, seed, subseed)
            images.append(GeneratedImage(pic, seed, subseed, text, len(images)))
    return images, timings
