"""Inpainting end to end: unmasked pixels survive exactly, masks from alpha, invert, infotext keys."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlab.engine import Engine
from sdlab.infotext import parse_infotext
from sdlab.types import GenerationRequest

BASE = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=3,
                         sampler="Euler a", seed=5, denoising_strength=0.9, model="tiny-sd1")


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def mask() -> Image.Image:
    m = Image.new("L", (64, 64))
    m.paste(255, (20, 16, 40, 36))
    return m


def overlay_keep(mask: Image.Image, blur: int) -> np.ndarray:
    """Pixels whose (blurred, doubled) overlay mask is 0: these must be the input's exactly."""
    from sdlab.pipeline.inpaint import binary_mask, blur_mask

    m = binary_mask(mask)
    if blur:
        m = blur_mask(m, blur, blur)
    return np.asarray(m) == 0


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-inpaint"])
@pytest.mark.parametrize("area", ["Whole picture", "Only masked"])
@pytest.mark.parametrize("fill", ["fill", "original", "latent noise", "latent nothing"])
def test_unmasked_pixels_are_identical_to_the_input(engine: Engine, init_image, mask, model, area, fill) -> None:
    out = engine.generate(BASE.replace(model=model, init_images=(init_image,), mask=mask, inpaint_area=area,
                                       inpainting_fill=fill, inpaint_full_res_padding=4))
    a, b = np.asarray(out.images[0].image), np.asarray(init_image)
    keep = overlay_keep(mask, 4)
    assert out.images[0].image.size == (64, 64)
    assert np.array_equal(a[keep], b[keep])
    assert (a[~keep] != b[~keep]).any()  # the masked part was repainted


def test_only_masked_keeps_the_output_at_input_size(engine: Engine, init_image, mask) -> None:
    big = init_image.resize((96, 80))
    big_mask = Image.new("L", (96, 80))
    big_mask.paste(255, (30, 30, 50, 44))
    out = engine.generate(BASE.replace(init_images=(big,), mask=big_mask, inpaint_area="Only masked", mask_blur=0,
                                       width=32, height=32))
    a, b = np.asarray(out.images[0].image), np.asarray(big)
    assert out.images[0].image.size == (96, 80)
    keep = np.asarray(big_mask) == 0
    assert np.array_equal(a[keep], b[keep]) and not np.array_equal(a[~keep], b[~keep])


def test_invert_repaints_the_outside(engine: Engine, init_image, mask) -> None:
    out = engine.generate(BASE.replace(init_images=(init_image,), mask=mask, inpainting_mask_invert=True, mask_blur=0))
    a, b = np.asarray(out.images[0].image), np.asarray(init_image)
    inside = np.asarray(mask) == 255
    assert np.array_equal(a[inside], b[inside]) and not np.array_equal(a[~inside], b[~inside])
    assert parse_infotext(out.images[0].infotext)["Mask mode"] == "Inpaint not masked"


def test_mask_from_alpha_repaints_transparent_pixels(engine: Engine, init_image, mask) -> None:
    rgba = init_image.convert("RGBA")
    rgba.putalpha(Image.eval(mask, lambda v: 255 - v))
    from_alpha = engine.generate(BASE.replace(init_images=(rgba,), mask_from_alpha=True, mask_blur=0))
    # transparent pixels flatten onto white, so compare with that image and an explicit mask
    flat = Image.new("RGB", (64, 64), (255, 255, 255))
    flat.paste(init_image, mask=Image.eval(mask, lambda v: 255 - v))
    explicit = engine.generate(BASE.replace(init_images=(flat,), mask=mask, mask_blur=0))
    assert np.array_equal(np.asarray(from_alpha.images[0].image), np.asarray(explicit.images[0].image))


def test_infotext_keys_and_round_trip(engine: Engine, init_image, mask, tmp_path) -> None:
    request = BASE.replace(model="tiny-inpaint", init_images=(init_image,), mask=mask, mask_blur=2,
                           inpainting_fill="latent noise", inpaint_area="Only masked", inpaint_full_res_padding=8,
                           inpainting_mask_weight=0.5)
    first = engine.generate(request)
    params = parse_infotext(first.images[0].infotext)
    assert params["Mask blur"] == "2" and params["Masked content"] == "latent noise"
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "8"
    assert params["Conditional mask weight"] == "0.5" and params["Denoising strength"] == "0.9"
    again_request = engine.request_from_image(engine.save(first, tmp_path)[0].path)
    again = engine.generate(again_request.replace(init_images=(init_image,), mask=mask))
    assert again.images[0].infotext == first.images[0].infotext
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(again.images[0].image))


def test_mask_weight_changes_the_inpainting_model_result(engine: Engine, init_image, mask) -> None:
    req = BASE.replace(model="tiny-inpaint", init_images=(init_image,), mask=mask)
    a = engine.generate(req.replace(inpainting_mask_weight=1.0)).images[0].image
    b = engine.generate(req.replace(inpainting_mask_weight=0.0)).images[0].image
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_timestep_sampler_inpainting_keeps_unmasked_pixels(engine: Engine, init_image, mask) -> None:
    out = engine.generate(BASE.replace(sampler="DDIM", init_images=(init_image,), mask=mask, mask_blur=0))
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(out.images[0].image)[keep], np.asarray(init_image)[keep])
