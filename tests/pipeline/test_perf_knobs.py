"""Performance knobs on tiny checkpoints: each changes what it should and the image at most by its tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdlab.cli.main import main
from sdlab.engine import Engine
from sdlab.errors import InvalidRequestError
from sdlab.pipeline.decode import decode_latent
from sdlab.pipeline.perf import PerfSettings, configure_vae, model_bytes
from sdlab.types import GenerationRequest

BASE = GenerationRequest(prompt="a red circle", negative_prompt="blurry", width=64, height=64, steps=3,
                         sampler="Euler a", seed=11, model="tiny-sd1")


def pixels(engine: Engine, request: GenerationRequest = BASE) -> np.ndarray:
    return np.asarray(engine.generate(request).images[0].image).astype(np.int16)


@pytest.fixture(scope="module")
def reference(engine: Engine) -> dict[str, np.ndarray]:
    """fp32 SDPA images of the tiny SD1 and SDXL models (the shared session engine)."""
    return {"tiny-sd1": pixels(engine), "tiny-sdxl": pixels(engine, BASE.replace(model="tiny-sdxl"))}


@pytest.mark.parametrize("dtype,mean_tol", [("fp16", 0.05), ("bf16", 0.25)])
@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_half_precision_is_within_one_level_of_fp32(models_root: Path, reference, dtype: str, mean_tol: float,
                                                    model: str) -> None:
    """Tolerance: every 8-bit channel within 1 level of fp32, mean difference below ``mean_tol`` levels."""
    engine = Engine(models_root, "cpu", dtype)
    image = pixels(engine, BASE.replace(model=model))
    diff = np.abs(image - reference[model])
    assert diff.max() <= 1 and diff.mean() < mean_tol
    assert next(engine.load(model).unet.parameters()).dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def test_sdxl_vae_stays_fp32_in_fp16_and_sd1_vae_does_not(models_root: Path) -> None:
    engine = Engine(models_root, "cpu", "fp16", max_models=2)
    assert next(engine.load("tiny-sdxl").vae.parameters()).dtype == torch.float32  # A1111 --no-half-vae
    assert next(engine.load("tiny-sd1").vae.parameters()).dtype == torch.float16
    forced = Engine(models_root, "cpu", "fp16", perf=PerfSettings(vae_dtype="fp32"))
    assert next(forced.load("tiny-sd1").vae.parameters()).dtype == torch.float32
    kept = Engine(models_root, "cpu", "fp16", perf=PerfSettings(vae_dtype="model"))
    assert next(kept.load("tiny-sdxl").vae.parameters()).dtype == torch.float16


@pytest.mark.parametrize("perf", [PerfSettings(channels_last=True), PerfSettings(attention="sliced"),
                                  PerfSettings(attention="sliced", attention_slice_size=1),
                                  PerfSettings(attention="classic"), PerfSettings(vae_slicing=True)],
                         ids=["channels_last", "sliced", "sliced-1", "classic", "vae_slicing"])
def test_layout_and_attention_knobs_keep_the_image(models_root: Path, reference, perf: PerfSettings) -> None:
    """Tolerance: at most 1 level per channel (float reassociation), in practice identical."""
    image = pixels(Engine(models_root, "cpu", "fp32", perf=perf))
    assert np.abs(image - reference["tiny-sd1"]).max() <= 1


def test_sliced_attention_on_a_model_with_one_head_per_slice(models_root: Path, reference) -> None:
    """diffusers' "auto" slice size is heads // 2, which is 0 for single-head layers: sdlab slices by 1 there."""
    image = pixels(Engine(models_root, "cpu", perf=PerfSettings(attention="sliced")), BASE.replace(model="tiny-sdxl"))
    assert np.abs(image - reference["tiny-sdxl"]).max() <= 1


def test_attention_knob_sets_the_processor(models_root: Path) -> None:
    names = {}
    for attention in ("sdpa", "sliced", "classic"):
        unet = Engine(models_root, "cpu", perf=PerfSettings(attention=attention)).load("tiny-sd1").unet
        names[attention] = {type(p).__name__ for p in unet.attn_processors.values()}
    assert names == {"sdpa": {"AttnProcessor2_0"}, "sliced": {"SlicedAttnProcessor"}, "classic": {"AttnProcessor"}}


def test_channels_last_changes_the_weight_layout(models_root: Path) -> None:
    unet = Engine(models_root, "cpu", perf=PerfSettings(channels_last=True)).load("tiny-sd1").unet
    weight = unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_tiled_vae_decode_of_a_large_latent_matches_untiled(models_root: Path) -> None:
    """Tolerance: max 0.03, mean 0.003 in [0, 1] (tiles see their own GroupNorm statistics; seams blended)."""
    model = Engine(models_root, "cpu").load("tiny-sd1")
    latent = torch.randn(model.latent_channels, 96, 96, generator=torch.Generator().manual_seed(0))
    whole = decode_latent(model.vae, latent, model.latent_scaling_factor)
    tile = 128  # pixels: below the 192-pixel image, so it tiles
    configure_vae(model.vae, PerfSettings(vae_tiling=True, vae_tile_size=tile), model.vae_scale_factor)
    assert model.vae.use_tiling and model.vae.tile_latent_min_size == tile // model.vae_scale_factor
    tiled = decode_latent(model.vae, latent, model.latent_scaling_factor)
    model.vae.disable_tiling()
    diff = (tiled - whole).abs()
    assert tiled.shape == whole.shape and 0 < diff.max() < 0.03 and diff.mean() < 0.003


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_on_cpu_is_a_clear_error(models_root: Path, mode: str) -> None:
    with pytest.raises(InvalidRequestError, match="offload"):
        Engine(models_root, "cpu", perf=PerfSettings(offload=mode))


def test_torch_compile_gives_the_same_image_and_reports_compile_time(models_root: Path, reference) -> None:
    """Tolerance: at most 1 level per channel. Compile time is the first UNet call (trace + codegen)."""
    engine = Engine(models_root, "cpu", perf=PerfSettings(compile_unet=True))
    first = engine.generate(BASE)
    image = np.asarray(first.images[0].image).astype(np.int16)
    assert np.abs(image - reference["tiny-sd1"]).max() <= 1
    assert first.timings["compile"] > 0
    assert "compile" not in engine.generate(BASE).timings


def test_model_cache_bounded_by_bytes_evicts_least_recently_used(models_root: Path) -> None:
    sizes = {name: model_bytes(Engine(models_root, "cpu").load(name)) for name in ("tiny-sd1", "tiny-sd2v")}
    limit = sizes["tiny-sd1"] + sizes["tiny-sd2v"] + 1
    engine = Engine(models_root, "cpu", max_models=8, perf=PerfSettings(max_cache_bytes=limit))
    engine.load("tiny-sd1")
    engine.load("tiny-sd2v")
    assert engine.cached_models() == ["tiny-sd1", "tiny-sd2v"] and engine.cached_bytes() <= limit
    engine.load("tiny-sd1")  # now most recently used
    engine.load("tiny-inpaint")  # does not fit beside both: the least recently used (sd2v) goes
    assert "tiny-sd2v" not in engine.cached_models() and engine.cached_models()[-1] == "tiny-inpaint"
    assert engine.cached_bytes() <= limit


def test_a_model_larger_than_the_cache_bound_still_loads(models_root: Path) -> None:
    engine = Engine(models_root, "cpu", max_models=4, perf=PerfSettings(max_cache_bytes=1))
    engine.load("tiny-sd1")
    engine.load("tiny-sd2v")
    assert engine.cached_models() == ["tiny-sd2v"]


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_text_encoder_runs_once_for_a_batch_and_not_again_for_the_same_prompt(models_root: Path) -> None:
    engine = Engine(models_root, "cpu")
    calls = _count_calls(engine.load("tiny-sd1").text_encoders[0])
    engine.generate(BASE.replace(batch_size=3))
    after_batch = calls[0]
    assert after_batch == 2  # one prompt + one negative prompt, each one 75-token chunk, for all 3 images
    engine.generate(BASE.replace(seed=99))
    assert calls[0] == after_batch  # same prompts, another request: served from the engine's text cache
    engine.generate(BASE.replace(prompt="a blue square"))
    assert calls[0] == after_batch + 1  # a new prompt is encoded; the cached negative is not


def test_cli_rejects_offload_on_cpu_and_accepts_the_knobs(models_root: Path, tmp_path: Path, capsys) -> None:
    common = ["--models-dir", str(models_root), "--device", "cpu"]
    assert main([*common, "--offload", "model", "txt2img", "x", "--model", "tiny-sd1", "--out", str(tmp_path)]) == 2
    assert "offload" in capsys.readouterr().err
    args = [*common, "--attention", "sliced", "--channels-last", "--vae-tiling", "--vae-tile-size", "256",
            "--cache-bytes", "2G", "txt2img", "a red circle", "--model", "tiny-sd1", "--width", "64", "--height", "64",
            "--steps", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    assert list(tmp_path.glob("*.png"))
