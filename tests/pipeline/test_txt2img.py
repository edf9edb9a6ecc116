"""txt2img end to end on tiny random checkpoints: determinism, batching, round trips, errors, every family."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sdlab.engine import Engine
from sdlab.errors import CancelledError, InvalidRequestError, ModelNotFoundError
from sdlab.infotext import parse_infotext
from sdlab.prompt.plan import plan_prompts
from sdlab.types import GenerationRequest, ProgressEvent

BASE = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=3,
                         sampler="Euler a", seed=11, model="tiny-sd1")


def pixels(result, k: int = 0) -> np.ndarray:
    return np.asarray(result.images[k].image)


def test_same_request_gives_the_same_image(engine: Engine) -> None:
    a, b = engine.generate(BASE), engine.generate(BASE)
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(engine.generate(BASE.replace(seed=12))))


def test_image_k_of_a_batch_equals_the_single_image_with_seed_plus_k(engine: Engine) -> None:
    """Equal to one 8-bit level in under 1% of the pixels, in this process's default GEMM mode.

    Noise, conditioning and decode are per image; what is left is the BLAS: on an Intel Xeon with AMX,
    MKL picks its small-GEMM kernel by the number of rows, so the UNet's time-embedding Linear gives
    results 2.4e-7 apart for 6 rows (a batch of 3 with CFG) and 2 rows, and one pixel of image 2 moves
    by one level. The bit-for-bit check, with MKL's reproducible mode, is the next test.
    """
    batch = engine.generate(BASE.replace(batch_size=3))
    assert [img.seed for img in batch.images] == [11, 12, 13]
    for k in range(3):
        single = engine.generate(BASE.replace(seed=11 + k))
        diff = np.abs(pixels(batch, k).astype(np.int16) - pixels(single).astype(np.int16))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"image {k} differs from seed {11 + k} alone"


BIT_EXACT_BATCH = """
import sys
import numpy as np
from sdlab.engine import Engine
from sdlab.types import GenerationRequest
engine = Engine(models_dir=sys.argv[1], device="cpu", dtype="fp32")
base = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=3,
                         sampler="Euler a", seed=11, model="tiny-sd1")
batch = engine.generate(base.replace(batch_size=3))
for k in range(3):
    single = engine.generate(base.replace(seed=11 + k))
    assert np.array_equal(np.asarray(batch.images[k].image), np.asarray(single.images[0].image)), k
print("bit-exact")
"""


def test_batch_is_bit_exact_when_the_blas_is_row_invariant(models_root: Path) -> None:
    """With ``MKL_CBWR=COMPATIBLE`` (MKL's reproducible code path, set before the process starts) the GEMM
    no longer depends on the row count, and image k of a batch equals seed + k alone bit for bit.

    ``AVX2,STRICT`` was enough on an Intel Xeon with AMX but not on an AMD EPYC with AVX-512 (2026-12-04:
    there it makes a 6-row and a 2-row Linear differ by 2e-6, where the default and COMPATIBLE agree)."""
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE"}
    out = subprocess.run([sys.executable, "-c", BIT_EXACT_BATCH, str(models_root)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "bit-exact" in out.stdout, out.stderr[-2000:]


def test_batch_count_continues_the_seeds(engine: Engine) -> None:
    result = engine.generate(BASE.replace(batch_size=2, n_iter=2))
    assert [img.seed for img in result.images] == [11, 12, 13, 14]
    assert np.array_equal(pixels(result, 3), pixels(engine.generate(BASE.replace(seed=14))))


def test_infotext_round_trip_regenerates_the_identical_image(engine: Engine, tmp_path) -> None:
    request = BASE.replace(prompt="a (red:1.3) [circle:square:2], BREAK on blue", sampler="DPM++ 2M",
                           schedule_type="Karras", cfg_scale=5.5, clip_skip=2, subseed=99, subseed_strength=0.25)
    first = engine.generate(request)
    saved = engine.save(first, tmp_path)
    again_request = engine.request_from_image(saved[0].path)
    assert again_request.prompt == request.prompt and again_request.clip_skip == 2
    assert again_request.sampler == "DPM++ 2M" and again_request.schedule_type == "Karras"
    again = engine.generate(again_request)
    assert again.images[0].infotext == first.images[0].infotext
    assert np.array_equal(pixels(first), pixels(again))


def test_infotext_fields(engine: Engine) -> None:
    text = engine.generate(BASE.replace(sampler="DPM++ 2M Karras", seed=5)).images[0].infotext
    params = parse_infotext(text)
    assert params["Prompt"] == "a red circle" and params["Negative prompt"] == "blurry"
    assert params["Steps"] == "3" and params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras"
    assert params["Seed"] == "5" and (params["Size-1"], params["Size-2"]) == ("64", "64")
    assert params["Model"] == "tiny-sd1" and len(params["Model hash"]) == 10


def test_progress_reports_every_step_and_cancel_stops(engine: Engine) -> None:
    events: list[ProgressEvent] = []
    engine.generate(BASE.replace(steps=4), progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and all(e.total_steps == 4 for e in events)

    cancel = threading.Event()
    with pytest.raises(CancelledError):
        engine.generate(BASE.replace(steps=4), progress=lambda e: cancel.set(), cancel=cancel)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 513}, "multiple of 8"),
        ({"steps": 0}, "steps must be between"),
        ({"sampler": "Euler b"}, "valid samplers"),
        ({"schedule_type": "Karass"}, "valid"),
        ({"cfg_scale": "7"}, "cfg_scale must be a number"),
        ({"rng": "TPU"}, "rng must be one of"),
        ({"prompt": "(a:1.2.3)"}, "at character 2"),
        ({"subseed_strength": 1.5}, "subseed_strength"),
    ],
)
def test_bad_requests_get_clear_errors(engine: Engine, change: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        engine.generate(BASE.replace(**change))


def test_unknown_model_lists_what_exists(engine: Engine) -> None:
    with pytest.raises(ModelNotFoundError, match="tiny-sd1"):
        engine.generate(BASE.replace(model="no-such-model"))


def test_loading_the_same_checkpoint_twice_reuses_it(engine: Engine) -> None:
    assert engine.load("tiny-sd1") is engine.load("tiny-sd1")


@pytest.mark.parametrize("model", ["tiny-sd2v", "tiny-sdxl", "tiny-inpaint"])
def test_every_family_generates(engine: Engine, model: str) -> None:
    result = engine.generate(BASE.replace(model=model, negative_prompt=""))
    image = pixels(result)
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert parse_infotext(result.images[0].infotext)["Model"] == model


def test_sdxl_size_conditioning_matters(engine: Engine) -> None:
    request = BASE.replace(model="tiny-sdxl")
    plain = pixels(engine.generate(request))
    assert not np.array_equal(plain, pixels(engine.generate(request.replace(original_size=(256, 256)))))


def test_sampler_settings_are_written_and_read_back(engine: Engine) -> None:
    request = BASE.replace(sampler="Euler", s_churn=0.5, s_noise=1.003, sigma_max=10.0, schedule_type="Karras", rho=5.0)
    text = engine.generate(request).images[0].infotext
    params = parse_infotext(text)
    assert params["Sigma churn"] == "0.5" and params["Sigma noise"] == "1.003"
    assert params["Schedule max sigma"] == "10.0" and params["Schedule rho"] == "5.0"
    again = engine.request_from_infotext(text)
    assert (again.s_churn, again.s_noise, again.sigma_max, again.rho) == (0.5, 1.003, 10.0, 5.0)
    eta_text = engine.generate(BASE.replace(eta=0.5)).images[0].infotext
    assert parse_infotext(eta_text)["Eta"] == "0.5" and engine.request_from_infotext(eta_text).eta == 0.5


CIVITAI = (
    "(masterpiece:1.2), best quality, ultra-detailed, (photorealistic:1.37), 1girl, solo, long hair, "
    "[blue|red] eyes, looking at viewer, (detailed face:1.1), [smile:grin:0.4], ((intricate details)), "
    "cinematic lighting, volumetric fog, depth of field, bokeh, 8k uhd, dslr, film grain, fujifilm xt3 BREAK "
    "city street at night, neon signs, rain, reflections on wet asphalt, crowd in the background, "
    "(umbrella:0.8), [[lens flare]], \\(parentheses\\) kept literal, wide shot, from below, dynamic pose, "
    "wind, flowing dress, sparkles, glowing particles, fantasy, high contrast, vivid colors, sharp focus, "
    "trending on artstation, award winning photograph, hyperdetailed skin texture, subsurface scattering, "
    "rim light, soft shadows, golden hour, backlighting, lens 85mm, f1.8, iso 100, shallow depth of field, "
    "smooth gradients, perfect anatomy, highly detailed background, architecture, skyscrapers, reflections"
)


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_long_civitai_prompt_with_weights_break_and_editing(engine: Engine, model: str) -> None:
    request = BASE.replace(model=model, prompt=CIVITAI, negative_prompt="(worst quality:1.4), lowres, bad hands")
    plan = plan_prompts(CIVITAI, "", 3)
    assert len(plan.distinct_texts) >= 3  # alternation and editing give several texts
    result = engine.generate(request)
    assert np.asarray(result.images[0].image).std() > 0
    assert parse_infotext(result.images[0].infotext)["Prompt"] == CIVITAI
