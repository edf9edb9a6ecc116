"""Image modes in, 8-bit RGB out: what upscalers and face restorers are given.

A1111 converts every post-processing input with ``image.convert("RGB")``. sdlab does the same for
the modes where that is exact (RGB, RGBA/LA/PA: alpha dropped as A1111 drops it; L, 1, P, CMYK,
YCbCr, LAB, HSV), and differs where Pillow's plain conversion would clip: 16-bit and 32-bit integer
grey images are scaled to 8 bits (``round(v / 257)``) instead of being clipped to white. Float images
(mode ``F``) have no agreed range and are refused with an error saying how to convert them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, UnidentifiedImageError

from sdlab.errors import InvalidRequestError

Converter = Callable[[Image.Image], Image.Image]


def _plain(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def _palette(image: Image.Image) -> Image.Image:
    # a palette with transparency goes through RGBA so Pillow applies it, then alpha is dropped
    if "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _wide_grey(image: Image.Image) -> Image.Image:
    arr = np.asarray(image).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InvalidRequestError(
            f"{image.mode} image has values outside 0..65535 ({arr.min()}..{arr.max()}); "
            "save it as an 8-bit or 16-bit image"
        )
    grey = np.floor(arr / 257.0 + 0.5).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _float(image: Image.Image) -> Image.Image:
    raise InvalidRequestError(
        "32-bit float images (mode F) have no defined value range; convert the image to 8-bit RGB first"
    )


#: Pillow mode -> converter. A plain read-only mapping, not a Registry: Pillow modes are
#: case-sensitive ("RGBa" premultiplied vs "RGBA").
MODE_CONVERTERS: Mapping[str, Converter] = MappingProxyType(
    dict([
        ("RGB", _plain), ("RGBA", _plain), ("RGBX", _plain), ("RGBa", _plain), ("L", _plain), ("LA", _plain),
        ("La", _plain), ("1", _plain), ("CMYK", _plain), ("YCbCr", _plain), ("LAB", _plain), ("HSV", _plain),
        ("P", _palette), ("PA", _palette), ("I", _wide_grey), ("I;16", _wide_grey), ("I;16B", _wide_grey),
        ("I;16L", _wide_grey), ("I;16N", _wide_grey), ("F", _float),
    ]),
)  # fmt: skip


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB (a no-op for RGB); InvalidRequestError for modes that cannot be converted."""
    if image.mode == "RGB":
        return image
    if image.mode not in MODE_CONVERTERS:
        raise InvalidRequestError(
            f"unsupported image mode {image.mode!r}; supported: {', '.join(MODE_CONVERTERS)}. Save the image as RGB"
        )
    return MODE_CONVERTERS[image.mode](image)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file fully (the file is closed afterwards), in its own mode.

    Raises InvalidRequestError for a missing, unreadable or over-large (decompression bomb) file.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidRequestError(f"image file {p} does not exist")
    try:
        with Image.open(p) as img:
            img.load()
            return img.copy()
    except Image.DecompressionBombError as exc:
        raise InvalidRequestError(f"{p}: image is too large to open safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidRequestError(f"{p}: not a readable image ({exc})") from None
