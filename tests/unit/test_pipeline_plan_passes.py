"""Planning of img2img / inpaint / hires / refiner requests: validation messages and resolved values."""

from __future__ import annotations

import pytest
from PIL import Image

from sdlab.errors import InvalidRequestError
from sdlab.pipeline.plan import ModelFacts, plan_request
from sdlab.types import GenerationRequest, HiresFix, RefinerSpec

FACTS = ModelFacts("sd1", 512, 8, 4, 12)
IMG = Image.new("RGB", (100, 60), (120, 30, 200))
BASE = GenerationRequest(prompt="x", seed=1, steps=10)


def plan(**changes):
    return plan_request(BASE.replace(**changes), FACTS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"init_images": (IMG,), "denoising_strength": 1.5}, "denoising_strength must be between 0 and 1"),
        ({"init_images": (IMG,), "denoising_strength": -0.1}, "denoising_strength"),
        ({"init_images": (IMG,), "resize_mode": "stretch"}, "resize mode"),
        ({"init_images": (Image.new("I;16", (8, 8)),)}, "16/32-bit"),
        ({"init_images": ("a.png",)}, "must be a PIL image"),
        ({"init_images": (IMG, IMG, IMG), "batch_size": 2}, "3 init images for batch size 2"),
        ({"mask": Image.new("L", (100, 60))}, "needs an init image"),
        ({"init_images": (IMG,), "mask": Image.new("L", (50, 60))}, "mask is 50x60 but the init image is 100x60"),
        ({"init_images": (IMG,), "mask_from_alpha": True}, "no transparent pixels"),
        ({"init_images": (IMG,), "mask": Image.new("L", (100, 60)), "inpainting_fill": "blur"}, "masked content"),
        ({"init_images": (IMG,), "mask": Image.new("L", (100, 60)), "inpaint_area": "Masked"}, "inpaint_area"),
        ({"init_images": (IMG,), "mask": Image.new("L", (100, 60)), "resize_mode": "Just resize (latent upscale)"},
         "cannot be used with a mask"),
        ({"init_images": (IMG,), "hires": HiresFix()}, "txt2img only"),
        ({"hires": HiresFix(upscaler="Magic")}, "unknown hires upscaler 'Magic'"),
        ({"hires": HiresFix(denoising_strength=2.0)}, "hires denoising_strength"),
        ({"hires": HiresFix(sampler="Nope")}, "Nope"),
        ({"refiner": RefinerSpec("r", 1.5)}, "refiner switch_at"),
        ({"init_images": (IMG,), "img2img_fix_steps": True, "denoising_strength": 0.0}, "leaves no steps"),
    ],
)
def test_bad_requests_say_what_to_fix(changes, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        plan(**changes)


def test_img2img_size_defaults_to_init_image_rounded_down() -> None:
    p = plan(init_images=(IMG,))
    assert (p.width, p.height) == (96, 56) and p.latent_shape == (4, 7, 12)
    assert (plan(init_images=(IMG,), width=64).width) == 64


def test_odd_image_modes_are_accepted() -> None:
    for mode in ("CMYK", "P", "L", "RGBA", "LA"):
        plan(init_images=(Image.new(mode, (64, 64)),))


def test_fewer_images_than_batch_size_shrink_the_batch_as_a1111() -> None:
    p = plan(init_images=(IMG, IMG), batch_size=4, n_iter=2)
    assert p.request.batch_size == 2 and p.seeds == (1, 2, 3, 4)


def test_mask_from_alpha_is_accepted_with_transparency() -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    rgba.putpixel((3, 3), (0, 0, 0, 0))
    assert plan(init_images=(rgba,), mask_from_alpha=True).width == 64


def test_hires_plan_resolves_sizes_steps_and_prompts() -> None:
    p = plan(width=512, height=512, hires=HiresFix(scale=1.5, second_pass_steps=0, prompt="[a:b:1.5]",
                                                   sampler="Heun", upscaler="latent (nearest)"))
    h = p.hires
    assert h is not None and (h.width, h.height) == (768, 768) and h.latent_shape == (4, 96, 96)
    assert h.steps == 10 and h.sampler == "Heun" and h.upscaler == "Latent (nearest)"
    assert h.latent_mode is not None and h.latent_mode.mode == "nearest"
    assert h.prompts.total_steps == 20  # Heun schedules prompts over 2 x steps
    both = plan(width=512, height=768, hires=HiresFix(resize_x=1000, resize_y=1000)).hires
    assert both is not None and (both.width, both.height) == (1000, 1000)  # covered at 1000x1500, cropped
