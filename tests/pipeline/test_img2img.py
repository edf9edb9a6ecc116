"""img2img end to end on tiny checkpoints: strength behaviour, step counts, batches, resize modes, infotext."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlab.engine import Engine
from sdlab.errors import InvalidRequestError
from sdlab.infotext import parse_infotext
from sdlab.pipeline.decode import decode_batch
from sdlab.pipeline.images import encode_pixels, to_tensor
from sdlab.types import GenerationRequest, ProgressEvent

BASE = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=10,
                         sampler="Euler", seed=21, model="tiny-sd1")


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    x = np.linspace(0, 255, 64)
    rgb = np.stack([np.broadcast_to(x, (64, 64)), np.broadcast_to(x[:, None], (64, 64)), np.full((64, 64), 128.0)], 2)
    return Image.fromarray(rgb.astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


def test_strength_moves_away_from_the_init_image(engine: Engine, init_image: Image.Image) -> None:
    model = engine.load("tiny-sd1")
    # the tiny random VAE does not reconstruct, so compare with the image's own VAE round trip
    latent = encode_pixels(model.vae, to_tensor([init_image]), model.latent_scaling_factor)
    roundtrip = pixels(decode_batch(model.vae, latent, model.latent_scaling_factor)[0])
    dist = {}
    for strength in (0.0, 0.1, 0.3, 1.0):
        out = engine.generate(BASE.replace(init_images=(init_image,), denoising_strength=strength))
        dist[strength] = np.abs(pixels(out.images[0].image) - roundtrip).mean()
    # strength 0 is one Euler step from the smallest sigma; the random tiny UNet still moves it a little
    assert dist[0.0] < dist[0.1] < dist[0.3] < dist[1.0], dist


def test_step_count_follows_a1111_truncation(engine: Engine, init_image: Image.Image) -> None:
    for strength, fix, expected in ((0.6, False, 7), (0.35, False, 4), (0.5, True, 10)):
        events: list[ProgressEvent] = []
        engine.generate(BASE.replace(init_images=(init_image,), denoising_strength=strength, img2img_fix_steps=fix),
                        progress=events.append)
        # Euler makes one model call per step: t_enc + 1 steps over sigmas[steps - t_enc - 1:]
        assert len(events) == expected, (strength, fix)


def test_batch_image_k_equals_single_image_with_seed_plus_k(engine: Engine, init_image: Image.Image) -> None:
    request = BASE.replace(init_images=(init_image,), denoising_strength=0.6, sampler="Euler a", steps=4)
    batch = engine.generate(request.replace(batch_size=2))
    assert [i.seed for i in batch.images] == [21, 22]
    for k in range(2):
        single = engine.generate(request.replace(seed=21 + k))
        assert np.array_equal(np.asarray(batch.images[k].image), np.asarray(single.images[0].image))


def test_infotext_round_trip_regenerates_the_identical_image(engine: Engine, init_image: Image.Image, tmp_path) -> None:
    request = BASE.replace(init_images=(init_image,), denoising_strength=0.55, sampler="DPM++ 2M",
                           schedule_type="Karras", initial_noise_multiplier=0.9, steps=5)
    first = engine.generate(request)
    params = parse_infotext(first.images[0].infotext)
    assert params["Denoising strength"] == "0.55" and params["Noise multiplier"] == "0.9"
    assert params["Size-1"] == "64" and "Mask blur" not in params
    again_request = engine.request_from_image(engine.save(first, tmp_path)[0].path)
    assert again_request.denoising_strength == 0.55 and again_request.initial_noise_multiplier == 0.9
    again = engine.generate(again_request.replace(init_images=(init_image,)))
    assert again.images[0].infotext == first.images[0].infotext
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(again.images[0].image))


@pytest.mark.parametrize("mode", ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"])
def test_resize_modes_produce_the_requested_size(engine: Engine, init_image: Image.Image, mode: str) -> None:
    wide = init_image.resize((96, 48))
    out = engine.generate(BASE.replace(init_images=(wide,), resize_mode=mode, width=48, height=64, steps=2,
                                       denoising_strength=0.5))
    assert out.images[0].image.size == (48, 64)


def test_timestep_sampler_img2img_and_zero_strength(engine: Engine, init_image: Image.Image) -> None:
    ddim = BASE.replace(init_images=(init_image,), sampler="DDIM", steps=4)
    a = engine.generate(ddim.replace(denoising_strength=0.5)).images[0].image
    b = engine.generate(ddim.replace(denoising_strength=0.0)).images[0].image
    assert a.size == b.size == (64, 64) and not np.array_equal(np.asarray(a), np.asarray(b))


def test_rgba_init_image_is_flattened_on_white(engine: Engine, init_image: Image.Image) -> None:
    rgba = init_image.convert("RGBA")
    rgba.putalpha(0)
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    req = BASE.replace(steps=2, denoising_strength=0.3)
    a = engine.generate(req.replace(init_images=(rgba,))).images[0].image
    b = engine.generate(req.replace(init_images=(white,))).images[0].image
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_input_errors_before_work(engine: Engine, init_image: Image.Image) -> None:
    with pytest.raises(InvalidRequestError, match="denoising_strength"):
        engine.generate(BASE.replace(init_images=(init_image,), denoising_strength=1.2))
