"""Hires fix (A1111 txt2img ``enable_hr``): target size rules, upscaler modes and the second pass.

Target size (A1111 ``calculate_target_resolution``), first pass ``W x H``:

* ``resize_x = resize_y = 0``: ``(int(W * scale), int(H * scale))``; infotext ``Hires upscale: scale``.
* only ``resize_x``: ``(resize_x, resize_x * H // W)``; only ``resize_y``: ``(resize_y * W // H, resize_y)``.
* both: upscale to cover ``resize_x x resize_y`` keeping the aspect ratio (if ``W/H < rx/ry`` the width
  is ``rx`` and the height ``rx * H // W``, else the height is ``ry``), then crop the latent centred by
  ``truncate = (upscaled - wanted) // f`` cells (``t // 2`` before, ``(t + 1) // 2`` after);
  infotext ``Hires resize: "RXxRY"``.

The second pass is img2img on the upscaled latent: latent modes interpolate the latent
(``torch.nn.functional.interpolate`` with A1111's mode / antialias), image upscalers decode, upscale the
8-bit images ("Just resize" with the upscaler) and encode again. Fresh noise comes from the same seeds
(a new ImageRNG of the hires latent shape); steps = ``second_pass_steps or steps`` truncated by the
denoising strength as any img2img.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.pipeline.images import builtin_upscale, encode_pixels, to_tensor, upscale_to
from sdlab.prompt.plan import PromptPlan
from sdlab.registry import Registry
from sdlab.types import HiresFix

if TYPE_CHECKING:
    from sdlab.pipeline.plan import Plan

#: The image upscaler used for non-latent hires upscalers: ``(image, name, scale) -> image``.
#: Switch to ``sdlab.post.upscale.upscale_image`` (with models_dir / device bound) once it has landed.
ImageUpscaler = Callable[[Image.Image, str, float], Image.Image]
IMAGE_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")


@dataclass(frozen=True)
class LatentUpscaleMode:
    """``torch.nn.functional.interpolate`` mode and antialias flag of an A1111 latent upscaler."""

    mode: str
    antialias: bool = False


LATENT_UPSCALE_MODES: Registry[LatentUpscaleMode] = Registry.of(
    "latent upscale mode",
    [
        ("Latent", LatentUpscaleMode("bilinear")),
        ("Latent (antialiased)", LatentUpscaleMode("bilinear", True)),
        ("Latent (bicubic)", LatentUpscaleMode("bicubic")),
        ("Latent (bicubic antialiased)", LatentUpscaleMode("bicubic", True)),
        ("Latent (nearest)", LatentUpscaleMode("nearest")),
        ("Latent (nearest-exact)", LatentUpscaleMode("nearest-exact")),
    ],
)


@dataclass(frozen=True)
class HiresTarget:
    """Upscaled size in pixels and the latent cells cropped off (A1111 ``hr_upscale_to_x/y``, ``truncate_x/y``)."""

    width: int
    height: int
    truncate_x: int = 0
    truncate_y: int = 0


def hires_target(width: int, height: int, scale: float, resize_x: int, resize_y: int, f: int = 8) -> HiresTarget:
    """A1111's target size rule (module docstring); ``f``: pixels per latent cell."""
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(int(width * scale), int(height * scale))
    if resize_y == 0:
        return HiresTarget(resize_x, resize_x * height // width)
    if resize_x == 0:
        return HiresTarget(resize_y * width // height, resize_y)
    if width / height < resize_x / resize_y:
        w, h = resize_x, resize_x * height // width
    else:
        w, h = resize_y * width // height, resize_y
    return HiresTarget(w, h, (w - resize_x) // f, (h - resize_y) // f)


def truncate_latent(latent: Tensor, target: HiresTarget) -> Tensor:
    """Crop ``truncate`` cells centred (``t // 2`` before, ``(t + 1) // 2`` after) from h and w."""
    tx, ty = target.truncate_x, target.truncate_y
    return latent[:, :, ty // 2: latent.shape[2] - (ty + 1) // 2, tx // 2: latent.shape[3] - (tx + 1) // 2]


def hires_latent_shape(target: HiresTarget, channels: int, f: int) -> tuple[int, int, int]:
    """``(C, h, w)`` of the second pass (after truncation)."""
    return channels, target.height // f - target.truncate_y, target.width // f - target.truncate_x


def upscale_latent(latent: Tensor, mode: LatentUpscaleMode, target: HiresTarget, f: int) -> Tensor:
    """Interpolate the first pass's latent to ``target // f`` cells, then truncate."""
    up = torch.nn.functional.interpolate(latent, size=(target.height // f, target.width // f), mode=mode.mode,
                                         antialias=mode.antialias)
    return truncate_latent(up, target)


def upscale_images(images: list[Image.Image], upscaler: str, target: HiresTarget,
                   upscale: ImageUpscaler = builtin_upscale) -> list[Image.Image]:
    """The image path: every first-pass image "Just resize"d to the target with the upscaler."""
    return [upscale_to(im, upscaler, target.width, target.height, upscale) for im in images]


def encode_upscaled(vae: torch.nn.Module, images: list[Image.Image], scaling_factor: float, target: HiresTarget) -> Tensor:
    """Encode upscaled 8-bit images (A1111 ``images_tensor_to_samples``), then truncate."""
    return truncate_latent(encode_pixels(vae, to_tensor(images), scaling_factor), target)


@dataclass(frozen=True)
class HiresPlan:
    """A validated hires fix: the request's :class:`HiresFix` with everything resolved.

    ``steps``: second-pass steps (``second_pass_steps or steps``); ``latent_mode`` None = image upscaler;
    ``width`` / ``height``: the output size in pixels (latent cells x f, after truncation).
    """

    spec: HiresFix
    target: HiresTarget
    upscaler: str
    latent_mode: LatentUpscaleMode | None
    sampler: str
    schedule: str
    steps: int
    prompt: str
    negative_prompt: str
    prompts: PromptPlan
    latent_shape: tuple[int, int, int]
    width: int
    height: int


def resolve_upscaler(name: str, extra_upscalers: tuple[str, ...] = ()) -> tuple[str, LatentUpscaleMode | None]:
    """(canonical name, latent mode or None) for a hires upscaler name; unknown names list the choices."""
    if name in LATENT_UPSCALE_MODES:
        return LATENT_UPSCALE_MODES.canonical(name), LATENT_UPSCALE_MODES.get(name)
    for known in IMAGE_UPSCALERS + extra_upscalers:
        if known.lower() == name.strip().lower():
            return known, None
    choices = ", ".join(LATENT_UPSCALE_MODES.names() + IMAGE_UPSCALERS + extra_upscalers)
    raise InvalidRequestError(f"unknown hires upscaler {name!r}; choose one of: {choices}")


def hires_infotext(plan: Plan, hires: HiresPlan, first_label: str | None, hires_label: str | None) -> dict[str, object]:
    """The hires keys A1111 puts in ``extra_generation_params``, in its order.

    ``first_label`` / ``hires_label``: the schedule-type labels of the two passes ("Hires schedule type"
    is written when the hires label differs from the first pass's written one).
    """
    r, spec = plan.request, hires.spec
    params: dict[str, object] = {"Denoising strength": spec.denoising_strength}
    if spec.sampler is not None and hires.sampler != plan.sampler:
        params["Hires sampler"] = hires.sampler
    if hires.prompt != r.prompt:
        params["Hires prompt"] = hires.prompt
    if hires.negative_prompt != r.negative_prompt:
        params["Hires negative prompt"] = hires.negative_prompt
    params["Hires schedule type"] = hires_label if hires_label is not None and hires_label != first_label else None
    if spec.resize_x == 0 and spec.resize_y == 0:
        params["Hires upscale"] = spec.scale
    else:
        params["Hires resize"] = f"{spec.resize_x}x{spec.resize_y}"
    if spec.second_pass_steps:
        params["Hires steps"] = spec.second_pass_steps
    params["Hires upscaler"] = hires.upscaler
    return params
