"""Pure arithmetic of the img2img / inpaint / hires / refiner passes against A1111 v1.10.1's rules."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.errors import InvalidRequestError
from sdlab.pipeline.hires import (
    LATENT_UPSCALE_MODES,
    HiresTarget,
    hires_target,
    resolve_upscaler,
    truncate_latent,
    upscale_latent,
)
from sdlab.pipeline.images import RESIZE_MODES, builtin_upscale, resize_image, to_rgb, upscale_to
from sdlab.pipeline.inpaint import (
    apply_overlay,
    binary_mask,
    blur_mask,
    crop_region,
    expand_crop_region,
    gaussian_taps,
    latent_mask,
    make_overlay,
    process_mask,
)
from sdlab.pipeline.refiner import RefinerSwitch, completed_ratio, launch_total, should_switch
from sdlab.pipeline.sampling import PassSpec, pass_steps
from sdlab.prompt.plan import plan_prompts
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.models.load import sd_alphas_cumprod


def a1111_steps(steps: int, strength: float, fix: bool) -> tuple[int, int]:
    """A1111 ``setup_img2img_steps``, restated independently."""
    if fix:
        total = int(steps / min(strength, 0.999)) if strength > 0 else 0
        return total, steps - 1
    return steps, int(min(strength, 0.999) * steps)


def _spec(steps: int, strength: float | None, fix: bool = False) -> PassSpec:
    return PassSpec("Euler", "Automatic", steps, plan_prompts("a", "", steps), 64, 64, (4, 8, 8),
                    denoising_strength=strength, fix_steps=fix)


@pytest.mark.parametrize("fix", [False, True])
def test_img2img_step_arithmetic_matches_a1111_for_many_pairs(fix: bool) -> None:
    strengths = [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.33, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
                 0.8, 0.85, 0.9, 0.95, 0.99, 0.999, 1.0]
    for steps in (1, 2, 3, 4, 7, 10, 20, 25, 30, 50, 150):
        for strength in strengths:
            assert pass_steps(_spec(steps, strength, fix)) == a1111_steps(steps, strength, fix), (steps, strength)


def test_txt2img_pass_keeps_all_steps() -> None:
    assert pass_steps(_spec(20, None)) == (20, 0)


def test_conformance_img2img_case_rule() -> None:
    # README section 7: 10 steps at strength 0.6 -> t_enc 6, the last 8 sigmas walked (7 steps)
    total, t_enc = pass_steps(_spec(10, 0.6))
    assert (total, t_enc) == (10, 6)
    assert len(torch.arange(11)[total - t_enc - 1:]) == 8


# -- resize modes -----------------------------------------------------------------------------------


def _gradient(w: int, h: int) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return Image.fromarray(np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                                           np.full((h, w, 1), 90.0)], axis=2).astype(np.uint8))


def test_resize_modes_registry_has_a1111_names_and_indices() -> None:
    assert RESIZE_MODES.names() == ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
    assert [RESIZE_MODES.get(str(i)).index for i in range(4)] == [0, 1, 2, 3]


def test_crop_and_resize_covers_and_centres() -> None:
    wide = _gradient(80, 40)
    out = resize_image("Crop and resize", wide, 32, 32)
    assert out.size == (32, 32)
    ref = wide.resize((64, 32), resample=Image.Resampling.LANCZOS)  # cover: height 32, width 80*32//40
    assert np.array_equal(np.asarray(out), np.asarray(ref)[:, 16:48])


def test_resize_and_fill_pads_with_stretched_edges() -> None:
    wide = _gradient(80, 40)
    out = np.asarray(resize_image("Resize and fill", wide, 32, 32))
    fitted = np.asarray(wide.resize((32, 16), resample=Image.Resampling.LANCZOS))
    assert np.array_equal(out[8:24], fitted)  # centred
    # each band is one row repeated, stretched from the fitted image's edge (Pillow samples around it)
    for band, edge in ((out[:8], fitted[:1]), (out[24:], fitted[-1:])):
        assert (band == band[:1]).all()
        assert np.abs(band[:1].astype(int) - edge.astype(int)).max() <= 3


def test_just_resize_and_latent_mode() -> None:
    im = _gradient(48, 40)
    assert resize_image("Just resize", im, 32, 24).size == (32, 24)
    assert resize_image("Just resize (latent upscale)", im, 32, 24) is im


def test_to_rgb_modes() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # flattened onto white
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("P", (4, 4))).mode == "RGB"
    with pytest.raises(InvalidRequestError, match="8-bit"):
        to_rgb(Image.new("I;16", (4, 4)))


def test_upscale_to_uses_the_upscaler_then_lanczos() -> None:
    im = _gradient(20, 10)
    calls = []

    def spy(image: Image.Image, name: str, scale: float) -> Image.Image:
        calls.append((name, scale))
        return builtin_upscale(image, name, scale)

    out = upscale_to(im, "Nearest", 50, 20, spy)
    assert out.size == (50, 20) and calls == [("Nearest", 2.5)]
    assert upscale_to(im, "Nearest", 10, 5, spy).size == (10, 5) and len(calls) == 1  # no upscale when shrinking


# -- masks ---------------------------------------------------------------------------------------


def test_binary_mask_thresholds_and_uses_alpha() -> None:
    grey = Image.fromarray(np.array([[0, 128, 129, 255]], dtype=np.uint8), "L")
    assert np.asarray(binary_mask(grey)).tolist() == [[0, 0, 255, 255]]
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 200))
    assert np.asarray(binary_mask(rgba)).tolist() == [[0, 255]]


@pytest.mark.parametrize(("sigma", "size"), [(1, 7), (4, 21), (0.5, 3), (2.2, 13), (64, 321)])
def test_gaussian_kernel_size_rule(sigma: float, size: int) -> None:
    taps = gaussian_taps(sigma)
    assert len(taps) == size == 2 * int(2.5 * sigma + 0.5) + 1
    assert taps.sum() == pytest.approx(1.0) and np.argmax(taps) == size // 2


def test_blur_is_separable_with_mirrored_borders() -> None:
    m = np.zeros((9, 9), dtype=np.uint8)
    m[4, 1] = 255
    out = np.asarray(blur_mask(Image.fromarray(m, "L"), 1.0, 0))
    taps = gaussian_taps(1.0)
    # reflect-101 at the left edge: column 0 sees the pixel at column 1 twice (once mirrored)
    assert out[4, 0] == int(np.floor(255 * (taps[2] + taps[4]) + 0.5))
    assert out[4, 1] == int(np.floor(255 * (taps[3] + taps[1]) + 0.5))  # and its mirror at -1
    assert out[3].sum() == 0  # x-only blur leaves other rows alone
    both = np.asarray(blur_mask(Image.fromarray(m, "L"), 1.0, 1.0))
    assert both[3, 0] > 0


def test_crop_region_with_padding_and_blank_mask() -> None:
    m = Image.new("L", (100, 80))
    assert crop_region(m, 10) is None
    m.paste(255, (30, 20, 50, 40))
    assert crop_region(m, 0) == (30, 20, 50, 40)
    assert crop_region(m, 32) == (0, 0, 82, 72)


@pytest.mark.parametrize(
    ("box", "target", "image", "expected"),
    [
        ((30, 20, 50, 40), (64, 32), (100, 80), (20, 20, 60, 40)),  # widened both sides
        ((0, 10, 20, 30), (64, 32), (100, 80), (0, 10, 40, 30)),  # pushed off the left edge, shifted back
        ((90, 10, 100, 30), (64, 32), (100, 80), (60, 10, 100, 30)),  # hits the right edge
        ((10, 30, 50, 40), (32, 32), (100, 80), (10, 15, 50, 55)),  # taller
        ((10, 0, 90, 10), (32, 32), (100, 40), (10, 0, 90, 40)),  # cannot get tall enough: clipped
    ],
)
def test_expand_crop_region(box, target, image, expected) -> None:
    assert expand_crop_region(box, *target, *image) == expected


def test_process_mask_only_masked_and_whole_picture() -> None:
    m = Image.new("L", (64, 48))
    m.paste(255, (20, 10, 30, 20))
    whole = process_mask(m, width=32, height=32, blur=0, invert=False, only_masked=False, padding=0, resize="Just resize")
    assert whole is not None and whole.crop is None and whole.mask.size == (32, 32)
    only = process_mask(m, width=32, height=32, blur=0, invert=False, only_masked=True, padding=4, resize="Just resize")
    assert only is not None and only.crop == (16, 6, 34, 24) and only.paste_to == (16, 6, 18, 18)
    assert only.overlay_mask.size == (64, 48)
    assert process_mask(Image.new("L", (8, 8)), width=8, height=8, blur=0, invert=False, only_masked=True,
                        padding=0, resize="Just resize") is None
    inverted = process_mask(m, width=64, height=48, blur=0, invert=True, only_masked=False, padding=0, resize="Just resize")
    assert inverted is not None and np.asarray(inverted.mask)[0, 0] == 255


def test_whole_picture_overlay_mask_is_doubled() -> None:
    m = Image.new("L", (16, 16))
    m.paste(255, (4, 4, 12, 12))
    plan = process_mask(m, width=16, height=16, blur=2, invert=False, only_masked=False, padding=0, resize="Just resize")
    assert plan is not None
    a, b = np.asarray(plan.mask).astype(int), np.asarray(plan.overlay_mask).astype(int)
    assert np.array_equal(b, np.clip(a * 2, 0, 255))


def test_latent_mask_is_binary() -> None:
    m = Image.new("L", (64, 64))
    m.paste(255, (0, 0, 32, 64))
    lm = latent_mask(m, 8, 8)
    assert lm.shape == (1, 1, 8, 8) and set(lm.unique().tolist()) <= {0.0, 1.0}
    assert lm[0, 0, :, :3].eq(1).all() and lm[0, 0, :, 5:].eq(0).all()


def test_overlay_keeps_unmasked_pixels_exactly() -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    result = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mask = Image.new("L", (16, 16))
    mask.paste(255, (4, 4, 8, 8))
    out = np.asarray(apply_overlay(result, make_overlay(original, mask), None))
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(original)[keep])
    assert np.array_equal(out[~keep], np.asarray(result)[~keep])
    # pasted back into a crop: outside the box the original survives
    crop_result = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    pasted = np.asarray(apply_overlay(crop_result, make_overlay(original, mask), (2, 2, 8, 8)))
    assert np.array_equal(pasted[keep], np.asarray(original)[keep])


# -- hires ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "scale", "resize", "expected"),
    [
        ((512, 512), 2.0, (0, 0), HiresTarget(1024, 1024)),
        ((512, 768), 1.5, (0, 0), HiresTarget(768, 1152)),
        ((512, 512), 1.3, (0, 0), HiresTarget(665, 665)),
        ((512, 768), 2.0, (1024, 0), HiresTarget(1024, 1536)),
        ((512, 768), 2.0, (0, 1000), HiresTarget(666, 1000)),
        # both given: cover then truncate in latent cells
        ((512, 512), 2.0, (1024, 768), HiresTarget(1024, 1024, 0, 32)),
        ((512, 768), 2.0, (1000, 1000), HiresTarget(1000, 1500, 0, 62)),
        ((768, 512), 2.0, (1000, 1000), HiresTarget(1500, 1000, 62, 0)),
    ],
)
def test_hires_target_rules(size, scale, resize, expected) -> None:
    assert hires_target(*size, scale, *resize, f=8) == expected


def test_truncate_latent_is_centred() -> None:
    latent = torch.arange(10.0).reshape(1, 1, 1, 10).expand(1, 1, 4, 10)
    out = truncate_latent(latent, HiresTarget(80, 32, truncate_x=3))
    assert out.shape == (1, 1, 4, 7) and out[0, 0, 0].tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_latent_upscale_modes() -> None:
    assert LATENT_UPSCALE_MODES.names() == ("Latent", "Latent (antialiased)", "Latent (bicubic)",
                                            "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    near = upscale_latent(latent, LATENT_UPSCALE_MODES.get("Latent (nearest)"), HiresTarget(128, 128), 8)
    assert torch.equal(near[:, :, ::2, ::2], latent)
    bilinear = upscale_latent(latent, LATENT_UPSCALE_MODES.get("Latent"), HiresTarget(128, 128), 8)
    assert torch.equal(bilinear, torch.nn.functional.interpolate(latent, size=(16, 16), mode="bilinear"))


def test_resolve_upscaler() -> None:
    assert resolve_upscaler("latent (bicubic)")[0] == "Latent (bicubic)"
    assert resolve_upscaler("lanczos") == ("Lanczos", None)
    with pytest.raises(InvalidRequestError, match="R-ESRGAN"):
        resolve_upscaler("R-ESRGAN 4x+")
    assert resolve_upscaler("R-ESRGAN 4x+", ("R-ESRGAN 4x+",)) == ("R-ESRGAN 4x+", None)


# -- refiner ---------------------------------------------------------------------------------------


def test_refiner_completed_ratio_by_model_timestep() -> None:
    sigmas = SigmaModel.from_alphas_cumprod(sd_alphas_cumprod()).sigmas
    assert float(completed_ratio(sigmas[999:1000] * 1.0001, sigmas)) == 0.0
    assert float(completed_ratio(sigmas[199:200], sigmas)) == pytest.approx(0.8)
    assert should_switch(sigmas[199:200], sigmas, 0.8) and not should_switch(sigmas[200:201], sigmas, 0.8)
    # float32 comparison as A1111: (999 - 299) / 1000 is float32(0.7), which is not below 0.7
    assert should_switch(sigmas[299:300], sigmas, 0.7)
    assert float(completed_ratio(torch.tensor([499.0]), None)) == 0.5  # timestep samplers pass t
    assert not should_switch(torch.tensor([0.0]), None, 1.0)  # 1.0 never switches


def test_refiner_launch_total_as_a1111_launch_sampling() -> None:
    assert launch_total(20, 0, img2img=False, second_order=False) == 20
    assert launch_total(20, 0, img2img=False, second_order=True) == 40  # Heun, DPM2, DPM++ SDE...
    assert launch_total(20, 12, img2img=True, second_order=False) == 13  # t_enc + 1
    assert launch_total(20, 12, img2img=True, second_order=True) == 26


@pytest.mark.parametrize(("total", "switch_at", "first_refined_call"),
                         [(20, 0.8, 16), (13, 0.5, 7), (40, 0.8, 32), (10, 0.0, 0), (10, 1.0, None)])
def test_refiner_switch_by_sampling_steps_at_call(total: int, switch_at: float, first_refined_call: int | None) -> None:
    core = types.SimpleNamespace(step=0, inner="base", cond_at=None, uncond_at=None)
    used: list[str] = []

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> None:
        used.append(core.inner)
        core.step += 1

    switch = RefinerSwitch(guided, core, switch_at, None, lambda: ("refiner", None, None), total_calls=total)
    for _ in range(total):
        switch(torch.zeros(1), torch.tensor([999.0]))  # the noise level is ignored in this mode
    expected = total if first_refined_call is None else first_refined_call
    assert (used.index("refiner") if "refiner" in used else total) == expected
    assert used.count("refiner") == total - expected
