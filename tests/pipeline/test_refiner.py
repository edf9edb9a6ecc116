"""SDXL refiner switch on tiny SDXL base + refiner checkpoints: when it switches, infotext, round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_checkpoints import make_tiny_checkpoint

from sdlab.engine import Engine
from sdlab.errors import ModelNotFoundError
from sdlab.infotext import parse_infotext
from sdlab.types import GenerationRequest, HiresFix, RefinerSpec

BASE = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=4,
                         sampler="Euler a", seed=13, model="tiny-sdxl")


@pytest.fixture(scope="module")
def xl_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("xl-models")
    folder = root / "Stable-diffusion"
    folder.mkdir()
    make_tiny_checkpoint(folder / "tiny-sdxl.safetensors", "sdxl", seed=3)
    make_tiny_checkpoint(folder / "tiny-refiner.safetensors", "sdxl-refiner", seed=6)
    return Engine(models_dir=Path(root), device="cpu", dtype="fp32", max_models=2)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image)


def test_switch_at_one_never_switches(xl_engine: Engine) -> None:
    plain = xl_engine.generate(BASE)
    never = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 1.0)))
    assert np.array_equal(pixels(plain), pixels(never))
    assert "Refiner" not in parse_infotext(never.images[0].infotext)


def test_switch_changes_the_image_and_writes_infotext(xl_engine: Engine) -> None:
    plain = pixels(xl_engine.generate(BASE))
    half = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.5)))
    at_start = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.0)))
    assert not np.array_equal(plain, pixels(half)) and not np.array_equal(pixels(half), pixels(at_start))
    params = parse_infotext(half.images[0].infotext)
    assert params["Refiner"].startswith("tiny-refiner [") and params["Refiner switch at"] == "0.5"


def test_round_trip_regenerates_the_identical_image(xl_engine: Engine, tmp_path) -> None:
    first = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.6), sampler="DPM++ 2M"))
    again_request = xl_engine.request_from_image(xl_engine.save(first, tmp_path)[0].path)
    assert again_request.refiner is not None and again_request.refiner.switch_at == 0.6
    again = xl_engine.generate(again_request)
    assert again.images[0].infotext == first.images[0].infotext
    assert np.array_equal(pixels(first), pixels(again))


def test_with_hires_the_refiner_runs_in_the_second_pass_only(xl_engine: Engine) -> None:
    hires = HiresFix(scale=1.5, denoising_strength=0.5)
    plain = xl_engine.generate(BASE.replace(hires=hires))
    refined = xl_engine.generate(BASE.replace(hires=hires, refiner=RefinerSpec("tiny-refiner", 0.0)))
    assert not np.array_equal(pixels(plain), pixels(refined))
    assert "Refiner" in parse_infotext(refined.images[0].infotext)


def test_unknown_refiner_is_an_error(xl_engine: Engine) -> None:
    with pytest.raises(ModelNotFoundError):
        xl_engine.generate(BASE.replace(refiner=RefinerSpec("no-such-refiner", 0.5)))


def test_refiner_in_img2img(xl_engine: Engine) -> None:
    init = xl_engine.generate(BASE).images[0].image
    request = BASE.replace(init_images=(init,), denoising_strength=0.8)
    plain = xl_engine.generate(request)
    refined = xl_engine.generate(request.replace(refiner=RefinerSpec("tiny-refiner", 0.0)))
    assert not np.array_equal(pixels(plain), pixels(refined))
    assert parse_infotext(refined.images[0].infotext)["Refiner switch at"] == "0.0"


def test_switch_by_sampling_steps_differs_and_round_trips(xl_engine: Engine, tmp_path) -> None:
    by_time = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.5)))
    by_steps = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.5, by_sampling_steps=True)))
    # only the sampling-steps mode writes its key, as A1111 does
    params = parse_infotext(by_steps.images[0].infotext)
    assert params["Refiner switch by sampling steps"] == "True" and params["Refiner switch at"] == "0.5"
    assert "Refiner switch by sampling steps" not in by_time.images[0].infotext
    never = xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 1.0, by_sampling_steps=True)))
    assert np.array_equal(pixels(never), pixels(xl_engine.generate(BASE)))
    assert "Refiner switch by sampling steps: True" in never.images[0].infotext
    # at 0.3 of 4 Euler a steps: the call count switches at call 2 (1/4 < 0.3 <= 2/4), the model
    # timesteps at call 1 (its sigma maps to t ~ 666, ratio ~0.33): different images
    early_time = pixels(xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.3))))
    early_steps = pixels(xl_engine.generate(BASE.replace(refiner=RefinerSpec("tiny-refiner", 0.3, by_sampling_steps=True))))
    assert not np.array_equal(early_time, early_steps)
    again_request = xl_engine.request_from_image(xl_engine.save(by_steps, tmp_path)[0].path)
    assert again_request.refiner is not None and again_request.refiner.by_sampling_steps
    assert np.array_equal(pixels(xl_engine.generate(again_request)), pixels(by_steps))
