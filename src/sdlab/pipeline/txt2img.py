"""The txt2img pass: planned request + loaded model -> images with seeds and infotext (A1111 processing).

With ``plan.hires`` the first pass is followed by the hires second pass (:mod:`sdlab.pipeline.hires`);
with ``run.refiner`` the SDXL refiner is switched in during the last pass (:mod:`sdlab.pipeline.refiner`).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import Tensor

from sdlab.infotext import InfotextSettings, create_infotext, infotext_params
from sdlab.models.load import LoadedModel
from sdlab.pipeline.decode import decode_batch, decode_signed
from sdlab.pipeline.hires import encode_upscaled, hires_infotext, upscale_images, upscale_latent
from sdlab.pipeline.images import builtin_upscale, encode_signed
from sdlab.pipeline.plan import Plan
from sdlab.pipeline.refiner import RefinerHook, refiner_infotext, switch_mode_infotext
from sdlab.pipeline.sampling import (
    BatchInputs,
    PassSpec,
    RunContext,
    TextCache,
    Txt2ImgRun,
    extra_channels,
    infotext_image_cfg_scale,
    is_edit_model,
    is_inpainting_model,
    noise_source,
    sample_pass,
    time_ids,
)
from sdlab.prompt.plan import PromptPlan
from sdlab.samplers.registry import SamplerEntry, resolve_sampler, schedule_infotext
from sdlab.types import GeneratedImage

__all__ = ["RunContext", "TextCache", "Txt2ImgRun", "noise_source", "txt2img", "sampler_infotext",
           "sdxl_time_ids", "txt2img_image_conditioning"]

VERSION_TAG = "sdlab-0.1.0"


def sdxl_time_ids(plan: Plan) -> Tensor:
    """SDXL micro-conditioning ``[1, 6]``: original size, crop top-left, target size, each (height, width)."""
    return time_ids(plan.request, plan.width, plan.height)


def grey_conditioning(model: LoadedModel, width: int, height: int, device: torch.device) -> Tensor | None:
    """Extra UNet input channels for txt2img (A1111 ``txt2img_image_conditioning``), or None.

    Inpainting UNets (9 channels) get a full mask (1 channel, all ones) plus the latent of a mid-grey
    image; instruct-pix2pix UNets (8 channels) get the grey latent alone. The VAE posterior's mean is used
    (A1111's "Full" encoder samples the posterior with the global RNG; its spread is negligible here).
    """
    if extra_channels(model) <= 0:
        return None
    grey = torch.zeros(1, 3, height, width, device=device)  # 0.5 in [0, 1] is 0 in [-1, 1]
    latent = encode_signed(model.vae, grey, model.latent_scaling_factor)
    mask = torch.ones_like(latent[:, :1])
    return torch.cat([mask, latent], dim=1) if is_inpainting_model(model) else latent


def txt2img_image_conditioning(model: LoadedModel, plan: Plan, device: torch.device) -> Tensor | None:
    """:func:`grey_conditioning` at the plan's size."""
    return grey_conditioning(model, plan.width, plan.height, device)


def first_pass_spec(plan: Plan) -> PassSpec:
    """The txt2img pass of ``plan``."""
    r = plan.request
    return PassSpec(plan.sampler, plan.schedule, r.steps, plan.prompts, plan.width, plan.height, plan.latent_shape)


def _refiner_hook(run: Txt2ImgRun, plan: Plan, spec: PassSpec, batch: int) -> RefinerHook | None:
    r = plan.request
    if run.refiner is None or r.refiner is None:
        return None
    return RefinerHook(run.refiner, r, spec, batch, r.refiner.switch_at)


def _hires_inputs(run: Txt2ImgRun, plan: Plan, latents: Tensor, iteration: int) -> tuple[Tensor, Tensor | None]:
    """The upscaled latent and the extra UNet channels of the second pass (A1111 ``sample_hr_pass``)."""
    hires = plan.hires
    assert hires is not None
    model, f = run.model, run.model.vae_scale_factor
    weight = plan.request.inpainting_mask_weight
    extra = extra_channels(model)
    if hires.latent_mode is not None:
        up = upscale_latent(latents, hires.latent_mode, hires.target, f)
        if extra > 0 and (weight < 1.0 or is_edit_model(model)):  # instruct-pix2pix: its edit latent
            from sdlab.pipeline.img2img import image_conditioning  # noqa: PLC0415 - avoids an import cycle

            decoded = torch.stack([decode_signed(model.vae, lat, model.latent_scaling_factor) for lat in up])
            return up, image_conditioning(model, decoded, None, weight, run.device)
        return up, grey_conditioning(model, hires.width, hires.height, run.device)
    images = decode_batch(model.vae, latents, model.latent_scaling_factor)
    upscaled = upscale_images(images, hires.upscaler, hires.target, run.image_upscaler or builtin_upscale)
    up = encode_upscaled(model.vae, upscaled, model.latent_scaling_factor, hires.target)
    if extra > 0:
        from sdlab.pipeline.images import to_tensor  # noqa: PLC0415
        from sdlab.pipeline.img2img import image_conditioning  # noqa: PLC0415 - avoids an import cycle

        # A1111 hands the [0, 1] pixels (not 2x - 1) to the inpainting conditioning here
        return up, image_conditioning(model, to_tensor(upscaled), None, weight, run.device)
    return up, None


def hires_spec(plan: Plan) -> PassSpec:
    """The second pass of ``plan.hires``."""
    hires = plan.hires
    assert hires is not None
    # SDXL time ids use the upscaled size before truncation (A1111's hr_upscale_to_x / _y)
    return PassSpec(hires.sampler, hires.schedule, hires.steps, hires.prompts, hires.target.width, hires.target.height,
                    hires.latent_shape, denoising_strength=hires.spec.denoising_strength,
                    fix_steps=plan.request.img2img_fix_steps)


def _sample_batch(run: Txt2ImgRun, plan: Plan, prompts: PromptPlan, iteration: int, ctx: RunContext,
                  hooks: list[RefinerHook] | None = None) -> Tensor:
    """First pass (and hires second pass) of one batch; refiner hooks are appended to ``hooks``."""
    r = plan.request
    seeds, subseeds = plan.batch_seeds(iteration)
    spec = replace(first_pass_spec(plan), prompts=prompts)
    concat = txt2img_image_conditioning(run.model, plan, run.device)
    hook = None if plan.hires is not None else _refiner_hook(run, plan, spec, len(seeds))
    latents = sample_pass(run, r, spec, seeds, subseeds, iteration, ctx, BatchInputs(concat=concat),
                          None if hook is None else hook.wrap)
    if plan.hires is not None:
        up, concat = _hires_inputs(run, plan, latents, iteration)
        spec = hires_spec(plan)
        hook = _refiner_hook(run, plan, spec, len(seeds))
        latents = sample_pass(run, r, spec, seeds, subseeds, iteration, ctx, BatchInputs(init_latent=up, concat=concat),
                              None if hook is None else hook.wrap)
    if hook is not None and hooks is not None:
        hooks.append(hook)
    return latents


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


def _label(entry: SamplerEntry, schedule: str) -> str | None:
    return schedule_infotext(entry, schedule).get("Schedule type")


def pass_extra(run: Txt2ImgRun, plan: Plan, refined: bool) -> dict[str, object]:
    """``extra_generation_params`` of a txt2img request in A1111's insertion order: hires keys (set at
    init), the run's keys (emphasis, networks), the sampler's, then the refiner's (set while sampling)."""
    entry, _ = resolve_sampler(plan.sampler, plan.schedule)
    extra: dict[str, object] = {}
    if plan.hires is not None:
        hr_entry, _ = resolve_sampler(plan.hires.sampler, plan.hires.schedule)
        extra.update(hires_infotext(plan, plan.hires, _label(entry, plan.schedule), _label(hr_entry, plan.hires.schedule)))
    extra.update(run.extra_params)
    extra.update(sampler_infotext(entry, plan))
    extra.update(switch_mode_infotext(plan.request))
    if refined and run.refiner is not None and plan.request.refiner is not None:
        extra.update(refiner_infotext(run.refiner, plan.request.refiner.switch_at))
    return extra


def conditional_mask_weight(model: LoadedModel, weight: float) -> float | None:
    """A1111 writes ``Conditional mask weight`` for inpainting-conditioned (9-channel) models only."""
    return weight if is_inpainting_model(model) else None


def _infotext(run: Txt2ImgRun, plan: Plan, prompts: PromptPlan, seed: int, subseed: int,
              extra: dict[str, object] | None = None) -> str:
    r = plan.request
    entry, _ = resolve_sampler(plan.sampler, plan.schedule)
    extra = dict(pass_extra(run, plan, False) if extra is None else extra)
    hashes = run.model.hashes
    settings = InfotextSettings(
        steps=r.steps, sampler_name=entry.name, cfg_scale=r.cfg_scale, seed=seed, width=plan.width, height=plan.height,
        scheduler=extra.pop("Schedule type", None),
        model_hash=None if hashes is None else hashes.short, model_name=run.model_name,
        subseed=subseed, subseed_strength=r.subseed_strength,
        seed_resize_from=(r.seed_resize_from_w, r.seed_resize_from_h) if r.seed_resize_from_w > 0 else (-1, -1),
        image_cfg_scale=infotext_image_cfg_scale(run.model, r),
        conditional_mask_weight=conditional_mask_weight(run.model, r.inpainting_mask_weight),
        face_restoration=None if r.post is None else r.post.face_restoration,
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
        hooks: list[RefinerHook] = []
        latents = _sample_batch(run, plan, prompts, iteration, ctx, hooks)
        refined = any(h.switched for h in hooks)
        mid = time.perf_counter()
        model = run.refiner.model if refined and run.refiner is not None else run.model
        pictures = decode_batch(model.vae, latents, model.latent_scaling_factor)
        timings["sampling"] += mid - start
        timings["decode"] += time.perf_counter() - mid
        seeds, subseeds = plan.batch_seeds(iteration)
        extra = pass_extra(run, plan, refined)
        for pic, seed, subseed in zip(pictures, seeds, subseeds):
            text = _infotext(run, plan, prompts, seed, subseed, extra)
            images.append(GeneratedImage(pic, seed, subseed, text, len(images)))
    return images, timings
