"""Image modes given to upscalers: converted to 8-bit RGB as A1111 does, or a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlab.errors import InvalidRequestError
from sdlab.post.images import load_image, to_rgb
from sdlab.post.upscale import upscale_image


def test_rgb_is_returned_as_is() -> None:
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(img) is img


def test_cmyk_converts_like_pil() -> None:
    img = Image.new("CMYK", (8, 8), (10, 200, 30, 40))
    assert np.array_equal(np.asarray(to_rgb(img)), np.asarray(img.convert("RGB")))


def test_alpha_is_dropped_as_a1111_does() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[..., 3] = 0  # fully transparent: A1111's convert("RGB") keeps the colour, ignores alpha
    out = to_rgb(Image.fromarray(arr, "RGBA"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (200, 100, 50)
    la = Image.fromarray(np.stack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)], -1), "LA")
    assert to_rgb(la).getpixel((1, 1)) == (77, 77, 77)


def test_palette_with_and_without_transparency() -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert to_rgb(pal).getpixel((0, 0)) == (10, 20, 30)
    pal.info["transparency"] = 1
    assert to_rgb(pal).getpixel((0, 0)) == (10, 20, 30)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.mode.startswith("I")
    out = np.asarray(to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # Pillow's convert("RGB") would give 0, 255, 255, 255
    assert (out[..., 0] == out[..., 2]).all()


def test_32_bit_int_out_of_range_and_float_are_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="outside 0..65535"):
        to_rgb(Image.fromarray(np.array([[70000]], dtype=np.int32), "I"))
    with pytest.raises(InvalidRequestError, match="mode F"):
        to_rgb(Image.fromarray(np.zeros((2, 2), np.float32), "F"))


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "L", "I;16", "1"])
def test_every_mode_upscales_without_crashing(tmp_path: Path, mode: str) -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    img = base.convert("L").convert("I;16") if mode == "I;16" else base.convert(mode)
    out = upscale_image(img, "Lanczos", 2, models_dir=tmp_path)
    assert out.mode == "RGB" and out.size == (48, 32)


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InvalidRequestError, match="not a readable image"):
        load_image(bad)
