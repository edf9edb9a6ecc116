"""The img2img and inpainting pass (A1111 ``StableDiffusionProcessingImg2Img``).

Per request: every init image is flattened to RGB, masked (see :mod:`sdlab.pipeline.inpaint`), resized
by the resize mode (or cropped to the "Only masked" region), pre-filled for masked content other than
"original", and VAE-encoded (posterior mean, see :func:`sdlab.pipeline.images.encode_signed`); one image
serves the whole batch. "latent noise" replaces the masked latent by the first noise draw of the first
``batch_size`` seeds of the request, "latent nothing" zeroes it; both are computed once for every batch
count iteration, as in A1111. Per batch: fresh noise from the images' seeds (image k = seed + k) times
``initial_noise_multiplier``; A1111's step truncation by the denoising strength; with a mask the init
latent is blended back at every step and after sampling; decoded images are composited under the
overlay, so unmasked pixels are exactly the input's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.models.load import LoadedModel
from sdlab.pipeline.decode import decode_batch
from sdlab.pipeline.images import (
    RESIZE_MODES,
    alpha_channel,
    encode_pixels,
    encode_signed,
    resize_and_fill,
    resize_image,
    resize_latent,
    to_rgb,
    to_tensor,
)
from sdlab.pipeline.inpaint import (
    MASKED_CONTENT,
    Box,
    MaskPlan,
    apply_overlay,
    conditioning_mask,
    fill_masked,
    latent_mask,
    make_overlay,
    process_mask,
)
from sdlab.pipeline.plan import Plan
from sdlab.pipeline.refiner import RefinerHook, refiner_infotext, switch_mode_infotext
from sdlab.pipeline.sampling import (
    BatchInputs,
    PassSpec,
    RunContext,
    Txt2ImgRun,
    extra_channels,
    image_rng,
    is_edit_model,
    is_inpainting_model,
    sample_pass,
)
from sdlab.pipeline.txt2img import _infotext, sampler_infotext
from sdlab.samplers.registry import resolve_sampler
from sdlab.types import GeneratedImage, GenerationRequest

LATENT_RESIZE = "Just resize (latent upscale)"


@dataclass(frozen=True)
class Img2ImgInputs:
    """What the batches of an img2img request share.

    ``init_latent`` ``[B, C, h, w]``; ``repaint`` ``[1, 1, h, w]`` (1 = repaint) or None; ``concat`` extra UNet
    channels ``[1, K, h, w]`` or None; ``overlays`` one RGBA overlay per batch image (inpainting) and
    ``paste_to`` the "Only masked" region as (x, y, w, h); ``extra`` the mask infotext keys in A1111's order.
    """

    init_latent: Tensor
    repaint: Tensor | None
    concat: Tensor | None
    overlays: tuple[Image.Image, ...]
    paste_to: tuple[int, int, int, int] | None
    extra: dict[str, object]


def request_mask(r: GenerationRequest) -> Image.Image | None:
    """The mask image of a request: ``mask``, or white where the init image is transparent."""
    if r.mask is not None:
        return r.mask
    if not r.mask_from_alpha:
        return None
    alpha = alpha_channel(r.init_images[0])
    assert alpha is not None  # checked in planning
    return alpha.point(lambda v: 255 - v)


def image_conditioning(model: LoadedModel, source: Tensor, mask: Image.Image | None, weight: float,
                       device: torch.device) -> Tensor | None:
    """Extra UNet channels for img2img (A1111 ``img2img_image_conditioning``), or None for 4-channel UNets.

    ``source``: the processed images ``[B, 3, H, W]`` (A1111 passes ``2x - 1``). instruct-pix2pix: the
    first image's latent, the posterior mean not multiplied by the scaling factor (``edit_image_conditioning``).
    Inpainting models (``inpainting_image_conditioning``): the conditioning image is
    ``lerp(source, source * (1 - mask), weight)`` (mask rounded to 0/1; all ones without a mask), encoded,
    with the mask resized (nearest) to the latent size in front.
    """
    extra = extra_channels(model)
    if extra <= 0:
        return None
    if is_edit_model(model):
        return encode_signed(model.vae, source[:1], 1.0).to(device)
    if not is_inpainting_model(model):
        raise InvalidRequestError(f"UNets with {extra} extra input channels are not supported; use another model")
    cmask = conditioning_mask(mask, source.shape[2], source.shape[3])
    cond_image = torch.lerp(source, source * (1.0 - cmask), weight)
    latent = encode_signed(model.vae, cond_image[:1], model.latent_scaling_factor)
    small = torch.nn.functional.interpolate(cmask, size=latent.shape[-2:])
    return torch.cat([small, latent], dim=1).to(device)


def _mask_extra(r: GenerationRequest, plan_mask: MaskPlan | None) -> dict[str, object]:
    content = MASKED_CONTENT.canonical(r.inpainting_fill)
    extra: dict[str, object] = {"Mask blur": r.mask_blur}
    if r.inpainting_mask_invert:
        extra["Mask mode"] = "Inpaint not masked"
    if plan_mask is not None and plan_mask.crop is not None:
        extra["Inpaint area"] = "Only masked"
        extra["Masked area padding"] = r.inpaint_full_res_padding
    if content != "original":
        extra["Masked content"] = content
    return extra


def _process_images(r: GenerationRequest, plan: Plan, mask: MaskPlan | None) -> tuple[list[Image.Image], list[Image.Image]]:
    """(images ready to encode, overlays): flatten, resize or crop, overlay, pre-fill."""
    images, overlays = [], []
    content = MASKED_CONTENT.get(r.inpainting_fill)
    for k, raw in enumerate(r.init_images):
        image = to_rgb(raw, f"init image {k + 1}")
        crop: Box | None = None if mask is None else mask.crop
        if crop is None:
            image = resize_image(r.resize_mode, image, plan.width, plan.height)
        if mask is not None:
            overlay_mask = mask.overlay_mask
            if overlay_mask.size != image.size:
                overlay_mask = resize_image(r.resize_mode, overlay_mask, image.width, image.height)
            overlays.append(make_overlay(image, overlay_mask))
        if crop is not None:
            image = resize_and_fill(image.crop(crop), plan.width, plan.height)
        if mask is not None and content.prefill:
            image = fill_masked(image, mask.mask)
        images.append(image)
    return images, overlays


def prepare_img2img(run: Txt2ImgRun, plan: Plan) -> Img2ImgInputs:
    """Everything the batches share: init latents, masks, overlays, conditioning (module docstring)."""
    r, model = plan.request, run.model
    conditioned = extra_channels(model) > 0
    if conditioned and len(r.init_images) > 1:
        raise InvalidRequestError("inpainting models take one init image per request; give one image")
    if conditioned and RESIZE_MODES.canonical(r.resize_mode) == LATENT_RESIZE:
        raise InvalidRequestError("resize mode 'Just resize (latent upscale)' does not work with inpainting models")
    raw_mask = request_mask(r)
    mask = None
    if raw_mask is not None:
        mask = process_mask(raw_mask, width=plan.width, height=plan.height, blur=r.mask_blur,
                            invert=r.inpainting_mask_invert, only_masked=r.inpaint_area == "Only masked",
                            padding=r.inpaint_full_res_padding, resize=r.resize_mode)
    images, overlays = _process_images(r, plan, mask)
    pixels = to_tensor(images)
    batch = r.batch_size
    latents = encode_pixels(model.vae, pixels, model.latent_scaling_factor).to(run.device)
    if len(images) == 1:
        latents = latents.expand(batch, -1, -1, -1).clone()
        overlays = overlays * batch
    _, h, w = plan.latent_shape
    if RESIZE_MODES.canonical(r.resize_mode) == LATENT_RESIZE:
        latents = resize_latent(latents, h, w)
    repaint = None
    if mask is not None:
        repaint = latent_mask(mask.mask, h, w).to(run.device)
        content = MASKED_CONTENT.get(r.inpainting_fill)
        if content.latent == "noise":
            noise = image_rng(r, plan.latent_shape, plan.seeds[:batch], None, run, variations=False).next()
            latents = latents * (1 - repaint) + noise * repaint
        elif content.latent == "zero":
            latents = latents * (1 - repaint)
    source = pixels * 2.0 - 1.0
    concat = image_conditioning(model, source, None if mask is None else mask.mask, r.inpainting_mask_weight, run.device)
    extra = {} if raw_mask is None else _mask_extra(r, mask)
    return Img2ImgInputs(latents, repaint, concat, tuple(overlays), None if mask is None else mask.paste_to, extra)


def img2img_spec(plan: Plan) -> PassSpec:
    """The sampler pass of an img2img plan."""
    r = plan.request
    return PassSpec(plan.sampler, plan.schedule, r.steps, plan.prompts, plan.width, plan.height, plan.latent_shape,
                    denoising_strength=r.denoising_strength, fix_steps=r.img2img_fix_steps,
                    noise_multiplier=r.initial_noise_multiplier)


def img2img_extra(run: Txt2ImgRun, plan: Plan, inputs: Img2ImgInputs) -> dict[str, object]:
    """``extra_generation_params`` of an img2img request in A1111's order."""
    r = plan.request
    extra: dict[str, object] = {"Denoising strength": r.denoising_strength, **inputs.extra, **run.extra_params}
    if r.initial_noise_multiplier != 1.0:
        extra["Noise multiplier"] = r.initial_noise_multiplier
    entry, _ = resolve_sampler(plan.sampler, plan.schedule)
    extra.update(sampler_infotext(entry, plan))
    extra.update(switch_mode_infotext(r))
    return extra


def img2img(run: Txt2ImgRun, plan: Plan, ctx: RunContext) -> tuple[list[GeneratedImage], dict[str, float]]:
    """Run every batch of an img2img / inpainting ``plan``; images in seed order with their infotexts."""
    r = plan.request
    start = time.perf_counter()
    inputs = prepare_img2img(run, plan)
    timings = {"prepare": time.perf_counter() - start, "sampling": 0.0, "decode": 0.0}
    spec = img2img_spec(plan)
    extra = img2img_extra(run, plan, inputs)
    images: list[GeneratedImage] = []
    for iteration in range(r.n_iter):
        seeds, subseeds = plan.batch_seeds(iteration)
        start = time.perf_counter()
        batch = BatchInputs(inputs.init_latent[: len(seeds)], inputs.repaint, inputs.concat)
        hook = None
        if run.refiner is not None and r.refiner is not None:
            hook = RefinerHook(run.refiner, r, spec, len(seeds), r.refiner.switch_at)
        latents = sample_pass(run, r, spec, seeds, subseeds, iteration, ctx, batch, None if hook is None else hook.wrap)
        mid = time.perf_counter()
        model = run.refiner.model if hook is not None and hook.switched and run.refiner is not None else run.model
        pictures = decode_batch(model.vae, latents, model.latent_scaling_factor)
        texts_extra = extra
        if hook is not None and hook.switched and run.refiner is not None and r.refiner is not None:
            texts_extra = {**extra, **refiner_infotext(run.refiner, r.refiner.switch_at)}
        if inputs.overlays:
            pictures = [apply_overlay(pic, inputs.overlays[k], inputs.paste_to) for k, pic in enumerate(pictures)]
        timings["sampling"] += mid - start
        timings["decode"] += time.perf_counter() - mid
        for pic, seed, subseed in zip(pictures, seeds, subseeds):
            text = _infotext(run, plan, plan.prompts, seed, subseed, texts_extra)
            images.append(GeneratedImage(pic, seed, subseed, text, len(images)))
    return images, timings
