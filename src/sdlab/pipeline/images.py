"""Init images as A1111 prepares them: mode conversion, the four resize modes, pixel <-> tensor.

Resize modes (A1111 ``images.resize_image``), target ``w x h``:

* "Just resize": stretch to ``w x h`` (Lanczos; A1111's default "upscaler for img2img" is none).
* "Crop and resize": scale so the image covers ``w x h`` (the other side ``W*h//H`` or ``H*w//W``), paste
  centred at ``(w//2 - sw//2, h//2 - sh//2)`` onto black, which crops the overhang.
* "Resize and fill": scale so the image fits inside, paste centred, then fill each empty band by
  stretching the resized image's outermost row (column) across it (Pillow's default bicubic).
* "Just resize (latent upscale)": the image is encoded at its own size and the *latent* is resized
  bilinearly to ``h/f x w/f`` (see :func:`resize_latent`).

Image upscalers used by hires fix go through :func:`upscale_image` (built-in Lanczos / Nearest until
``sdlab.post.upscale`` provides the model upscalers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry

LANCZOS = Image.Resampling.LANCZOS
#: A1111's ``img2img_background_color`` default: transparent init images are flattened onto white.
BACKGROUND = "#ffffff"
_REFUSED_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_rgb(image: Image.Image, what: str = "init image") -> Image.Image:
    """An init image as 8-bit RGB (A1111 ``images.flatten``): RGBA is composited onto white, every other
    8-bit mode goes through ``convert("RGB")`` (CMYK, P, L, LA...). 16/32-bit and float images are refused."""
    if not isinstance(image, Image.Image):
        raise InvalidRequestError(f"{what} must be a PIL image, got {type(image).__name__}")
    if image.mode in _REFUSED_MODES:
        raise InvalidRequestError(
            f"{what} has mode {image.mode} (16/32-bit or float); A1111 would clip it - save it as an 8-bit RGB image"
        )
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, BACKGROUND)
        background.paste(image, mask=image)
        image = background
    return image.convert("RGB")


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The image's alpha as an "L" image (palette transparency included), or None without transparency."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return None
    alpha = image.getchannel("A")
    return None if alpha.getextrema() == (255, 255) else alpha


# --------------------------------------------------------------------------------------------------
# resize modes


def _centre_paste(image: Image.Image, w: int, h: int, sw: int, sh: int) -> tuple[Image.Image, Image.Image]:
    resized = image.resize((sw, sh), resample=LANCZOS)
    canvas = Image.new("RGB" if image.mode != "L" else "L", (w, h))
    canvas.paste(resized, box=(w // 2 - sw // 2, h // 2 - sh // 2))
    return canvas, resized


def just_resize(image: Image.Image, w: int, h: int) -> Image.Image:
    """Stretch to ``w x h`` with Lanczos."""
    return image.resize((w, h), resample=LANCZOS)


def crop_and_resize(image: Image.Image, w: int, h: int) -> Image.Image:
    """Cover ``w x h`` keeping the aspect ratio, centred; the overhang is cut off."""
    ratio, src_ratio = w / h, image.width / image.height
    sw = w if ratio > src_ratio else image.width * h // image.height
    sh = h if ratio <= src_ratio else image.height * w // image.width
    return _centre_paste(image, w, h, sw, sh)[0]


def resize_and_fill(image: Image.Image, w: int, h: int) -> Image.Image:
    """Fit inside ``w x h`` keeping the aspect ratio, centred; empty bands repeat the edge rows/columns."""
    ratio, src_ratio = w / h, image.width / image.height
    sw = w if ratio < src_ratio else image.width * h // image.height
    sh = h if ratio >= src_ratio else image.height * w // image.width
    res, resized = _centre_paste(image, w, h, sw, sh)
    if ratio < src_ratio:
        band = h // 2 - sh // 2
        if band > 0:
            res.paste(resized.resize((w, band), box=(0, 0, w, 0)), box=(0, 0))
            res.paste(resized.resize((w, band), box=(0, resized.height, w, resized.height)), box=(0, band + sh))
    elif ratio > src_ratio:
        band = w // 2 - sw // 2
        if band > 0:
            res.paste(resized.resize((band, h), box=(0, 0, 0, h)), box=(0, 0))
            res.paste(resized.resize((band, h), box=(resized.width, 0, resized.width, h)), box=(band + sw, 0))
    return res


@dataclass(frozen=True)
class ResizeMode:
    """One A1111 resize mode: its index in A1111's UI/API and the pixel-space resize (None: latent)."""

    index: int
    resize: Callable[[Image.Image, int, int], Image.Image] | None


RESIZE_MODES: Registry[ResizeMode] = Registry.of(
    "resize mode",
    [
        ("Just resize", ResizeMode(0, just_resize)),
        ("Crop and resize", ResizeMode(1, crop_and_resize)),
        ("Resize and fill", ResizeMode(2, resize_and_fill)),
        ("Just resize (latent upscale)", ResizeMode(3, None)),
    ],
    aliases=[("0", "Just resize"), ("1", "Crop and resize"), ("2", "Resize and fill"),
             ("3", "Just resize (latent upscale)"), ("crop", "Crop and resize"), ("fill", "Resize and fill"),
             ("latent", "Just resize (latent upscale)"), ("resize", "Just resize")],
)


def resize_image(mode: str, image: Image.Image, w: int, h: int) -> Image.Image:
    """A1111 ``resize_image`` for ``mode`` (latent mode: the image unchanged)."""
    fn = RESIZE_MODES.get(mode).resize
    return image if fn is None else fn(image, w, h)


def resize_latent(latent: Tensor, h: int, w: int) -> Tensor:
    """The latent-upscale resize mode: bilinear interpolation to ``h x w`` latent cells."""
    return torch.nn.functional.interpolate(latent, size=(h, w), mode="bilinear")


# --------------------------------------------------------------------------------------------------
# image upscalers (hires fix)


def builtin_upscale(image: Image.Image, upscaler: str, scale: float) -> Image.Image:
    """A1111's "Lanczos" / "Nearest" upscalers: ``(int(W*scale), int(H*scale))`` with that filter ("None":
    unchanged). A1111 also rounds the upscaler's size down to a multiple of 8; ``sdlab.post.upscale`` does."""
    filters = {"lanczos": LANCZOS, "nearest": Image.Resampling.NEAREST}
    key = upscaler.strip().lower()
    if key == "none":
        return image
    if key not in filters:
        raise InvalidRequestError(f"unknown upscaler {upscaler!r}; available: Lanczos, Nearest and the latent modes")
    return image.resize((int(image.width * scale), int(image.height * scale)), resample=filters[key])


def upscale_to(image: Image.Image, upscaler: str, w: int, h: int, upscale: Callable[..., Image.Image]) -> Image.Image:
    """A1111's "Just resize" with an upscaler: upscale by ``max(w/W, h/H)`` when that is > 1, then
    Lanczos to exactly ``w x h`` if the upscaler's size differs."""
    scale = max(w / image.width, h / image.height)
    if scale > 1.0:
        image = upscale(image, upscaler, scale)
    if image.size != (w, h):
        image = image.resize((w, h), resample=LANCZOS)
    return image


# --------------------------------------------------------------------------------------------------
# pixels <-> tensors


def to_tensor(images: list[Image.Image]) -> Tensor:
    """RGB images (same size) -> ``[B, 3, H, W]`` float32 in [0, 1] (A1111: ``uint8 / 255``)."""
    return torch.from_numpy(np.stack([np.moveaxis(np.asarray(im, dtype=np.float32) / 255.0, 2, 0) for im in images]))


def encode_signed(vae: torch.nn.Module, signed: Tensor, scaling_factor: float) -> Tensor:
    """Images in [-1, 1] ``[B, 3, H, W]`` -> latents ``[B, C, H/f, W/f]`` float32, one image at a time.

    A1111 (VAE encoder "Full") *samples* the posterior with the global torch RNG, which makes img2img
    depend on RNG state outside the seed; sdlab takes the posterior mean instead (deterministic; the
    posterior's std on real VAEs is ~1e-3 of the latent range).
    """
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    out = []
    with torch.inference_mode():
        for img in signed:
            out.append(vae.encode(img[None].to(device=device, dtype=dtype)).latent_dist.mean.float()[0] * scaling_factor)
    return torch.stack(out)


def encode_pixels(vae: torch.nn.Module, pixels: Tensor, scaling_factor: float) -> Tensor:
    """Images in [0, 1] -> latents (A1111 ``images_tensor_to_samples``: encode ``2x - 1``)."""
    return encode_signed(vae, pixels * 2.0 - 1.0, scaling_factor)
