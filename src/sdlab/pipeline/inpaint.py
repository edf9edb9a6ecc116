"""Inpainting masks as A1111 v1.10.1 processes them (``processing.py`` img2img init, ``masking.py``).

Order of operations for a mask (white = repaint):

1. Binarise (:func:`binary_mask`): an RGBA mask with any transparency uses its alpha, otherwise its
   luminance; values > 128 become 255, the rest 0.
2. Invert when asked ("Inpaint not masked").
3. Blur (:func:`blur_mask`): a horizontal then a vertical Gaussian of sigma ``mask_blur`` pixels with
   OpenCV's kernel-size rule ``2 * int(2.5 * sigma + 0.5) + 1`` taps and mirrored borders (OpenCV's
   BORDER_REFLECT_101). OpenCV's uint8 path uses fixed-point taps; sdlab computes in float64 and rounds,
   which can differ from OpenCV by one grey level on some edge pixels.
4. "Whole picture": the mask is resized like the image; the overlay mask is ``min(2 * mask, 255)``.
   "Only masked": the bounding box of the mask, grown by ``padding`` pixels (clamped to the image), then
   widened to the target aspect ratio (:func:`expand_crop_region`); image and mask are cropped there
   and brought to the target size with "Resize and fill"; the result is pasted back ("Crop and resize"
   to the box size) under the overlay. A blank mask turns the job into plain img2img, as in A1111.
5. Latent mask: the processing mask resized (bicubic) to the latent size, rounded to 0/1.

Masked content (:data:`MASKED_CONTENT`): "fill" (masked pixels replaced by blurred surrounding colour),
"original", "latent noise" (masked latent replaced by the seed's noise), "latent nothing" (zeroed).
A1111 pre-fills the pixels for every mode except "original".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from scipy.ndimage import correlate1d
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.pipeline.images import crop_and_resize, resize_and_fill, resize_image
from sdlab.registry import Registry

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class MaskedContent:
    """A masked-content mode: A1111's ``inpainting_fill`` index and whether pixels are pre-filled."""

    index: int
    prefill: bool
    latent: str  # "keep", "noise" or "zero": what happens to the masked latent before sampling


MASKED_CONTENT: Registry[MaskedContent] = Registry.of(
    "masked content",
    [
        ("fill", MaskedContent(0, True, "keep")),
        ("original", MaskedContent(1, False, "keep")),
        ("latent noise", MaskedContent(2, True, "noise")),
        ("latent nothing", MaskedContent(3, True, "zero")),
    ],
    aliases=[("0", "fill"), ("1", "original"), ("2", "latent noise"), ("3", "latent nothing")],
)

INPAINT_AREAS = ("Whole picture", "Only masked")


def binary_mask(mask: Image.Image) -> Image.Image:
    """A1111 ``create_binary_mask`` (rounding on): "L" image of 0 / 255."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        grey = mask.getchannel("A")
    else:
        grey = mask.convert("L")
    return grey.point(lambda v: 255 if v > 128 else 0)


def gaussian_taps(sigma: float) -> np.ndarray:
    """OpenCV's Gaussian for ``sigma`` > 0: ``2*int(2.5*sigma + 0.5) + 1`` normalised taps (float64)."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """Separable Gaussian blur of an "L" mask: x first, then y; 0 skips an axis."""
    array = np.asarray(mask, dtype=np.uint8)
    for axis, sigma in ((1, blur_x), (0, blur_y)):
        if sigma > 0:
            blurred = correlate1d(array.astype(np.float64), gaussian_taps(sigma), axis=axis, mode="mirror")
            array = np.clip(np.floor(blurred + 0.5), 0, 255).astype(np.uint8)
    return Image.fromarray(array, "L")


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """A1111 ``get_crop_region_v2``: the mask's non-zero bounding box grown by ``padding``, or None if blank."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    if not padding:
        return box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def _grow(lo: int, hi: int, extra: int, limit: int) -> tuple[int, int]:
    lo -= extra // 2
    hi += extra - extra // 2
    if hi >= limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, limit)


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """A1111 ``expand_crop_region``: widen (or heighten) ``box`` to the ``width : height`` aspect ratio.

    The missing size ``int(desired - current)`` is added half before (rounded down) and half after; a box
    pushed past one edge is shifted back inside, and finally clipped to the image.
    """
    x1, y1, x2, y2 = box
    ratio_box, ratio_target = (x2 - x1) / (y2 - y1), width / height
    if ratio_box > ratio_target:
        extra = int((x2 - x1) / ratio_target - (y2 - y1))
        y1, y2 = _grow(y1, y2, extra, image_height)
    else:
        extra = int((y2 - y1) * ratio_target - (x2 - x1))
        x1, x2 = _grow(x1, x2, extra, image_width)
    return x1, y1, x2, y2


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111 ``masking.fill``: masked pixels get the colours of the unmasked ones, blurred outward by
    Gaussian radii 256, 64, 16 (x2), 4 (x4), 2 (x2), 0, composited in that order."""
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def make_overlay(image: Image.Image, overlay_mask: Image.Image) -> Image.Image:
    """The RGBA overlay pasted over the result: the input where the overlay mask is 0, transparent at 255."""
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(overlay_mask.convert("L")))
    return masked.convert("RGBA")


def apply_overlay(result: Image.Image, overlay: Image.Image, paste_to: Box | None) -> Image.Image:
    """A1111 ``apply_overlay``: paste a cropped result back (x, y, w, h), then alpha-composite the overlay."""
    if paste_to is not None:
        x, y, w, h = paste_to
        canvas = Image.new("RGBA", overlay.size)
        canvas.paste(crop_and_resize(result, w, h), (x, y))
        result = canvas
    out = result.convert("RGBA")
    out.alpha_composite(overlay)
    return out.convert("RGB")


@dataclass(frozen=True)
class MaskPlan:
    """A processed mask: ``mask`` at the processing size (w x h), ``overlay_mask`` at the output size,
    ``crop`` the "Only masked" region of the input (None: whole picture)."""

    mask: Image.Image
    overlay_mask: Image.Image
    crop: Box | None

    @property
    def paste_to(self) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the crop in the input, where the result is pasted back."""
        if self.crop is None:
            return None
        x1, y1, x2, y2 = self.crop
        return x1, y1, x2 - x1, y2 - y1


def process_mask(mask: Image.Image, *, width: int, height: int, blur: float, invert: bool, only_masked: bool,
                 padding: int, resize: str) -> MaskPlan | None:
    """Steps 1-4 of the module docstring; None when "Only masked" finds a blank mask (plain img2img)."""
    binary = binary_mask(mask)
    if invert:
        binary = ImageOps.invert(binary)
    if blur > 0:
        binary = blur_mask(binary, blur, blur)
    if only_masked:
        region = crop_region(binary, padding)
        if region is None:
            return None
        region = expand_crop_region(region, width, height, binary.width, binary.height)
        return MaskPlan(resize_and_fill(binary.crop(region), width, height), binary, region)
    processed = resize_image(resize, binary, width, height)
    doubled = np.clip(np.asarray(processed.convert("L"), dtype=np.float32) * 2, 0, 255).astype(np.uint8)
    return MaskPlan(processed, Image.fromarray(doubled, "L"), None)


def latent_mask(mask: Image.Image, latent_h: int, latent_w: int) -> Tensor:
    """The 0/1 latent mask ``[1, 1, h, w]`` (1 = repaint): bicubic resize, /255, rounded (A1111 ``nmask``)."""
    small = mask.convert("RGB").resize((latent_w, latent_h))
    values = np.asarray(small, dtype=np.float32)[:, :, 0] / 255.0
    return torch.from_numpy(np.around(values))[None, None]


def conditioning_mask(mask: Image.Image | None, height: int, width: int) -> Tensor:
    """Pixel-space conditioning mask ``[1, 1, H, W]`` for inpainting models: /255 and rounded; ones without a mask."""
    if mask is None:
        return torch.ones(1, 1, height, width)
    values = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    return torch.round(torch.from_numpy(values))[None, None]


def check_mask_size(mask: Image.Image, image: Image.Image) -> None:
    """The mask must have the init image's size."""
    if mask.size != image.size:
        raise InvalidRequestError(
            f"the mask is {mask.width}x{mask.height} but the init image is {image.width}x{image.height}; "
            "give a mask of the same size"
        )
