"""Loading tiny single-file checkpoints: every tensor of the loaded modules equals the saved one."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.tiny_checkpoints import make_tiny_checkpoint  # noqa: E402

from sdlab.errors import UnsupportedModelError  # noqa: E402
from sdlab.models.files import HashCache  # noqa: E402
from sdlab.models.load import load_checkpoint, sd_alphas_cumprod  # noqa: E402


def assert_same_tensors(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    a, b = expected.state_dict(), actual.state_dict()
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def test_sd1_round_trip_non_standard_sizes(tmp_path: Path) -> None:
    tiny = make_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd1")
    loaded = load_checkpoint(tiny.path)
    assert loaded.family == "sd1" and loaded.detection.variant == "standard"
    assert loaded.prediction_type == "epsilon"
    assert loaded.configs.unet["block_out_channels"] == [32, 64]
    assert loaded.configs.unet["layers_per_block"] == 1
    assert loaded.configs.text_encoders[0]["hidden_size"] == 64
    assert loaded.configs.text_encoders[0]["num_attention_heads"] == 1
    assert loaded.vae_scale_factor == 2
    assert loaded.latent_channels == 4
    assert loaded.latent_scaling_factor == pytest.approx(0.18215)
    assert len(loaded.hashes.short) == 10 and loaded.hashes.sha256.startswith(loaded.hashes.short)
    assert_same_tensors(tiny.unet, loaded.unet)
    assert_same_tensors(tiny.vae, loaded.vae)
    assert_same_tensors(tiny.text_encoders[0], loaded.text_encoders[0])


def test_hash_computed_during_the_load_is_the_files_sha256_and_fills_the_cache(tmp_path: Path) -> None:
    """The hash runs on a thread beside the load; its result is the file's SHA-256 and lands in the cache."""
    tiny = make_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd1")
    cache = HashCache()
    loaded = load_checkpoint(tiny.path, hash_cache=cache)
    assert loaded.hashes.sha256 == hashlib.sha256(tiny.path.read_bytes()).hexdigest()
    assert len(cache) == 1 and cache.hashes(tiny.path) == loaded.hashes


def test_a_file_that_is_not_a_checkpoint_is_refused_before_it_is_hashed(tmp_path: Path) -> None:
    tiny = make_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd1")
    from safetensors.torch import load_file, save_file

    lora = {k: v for k, v in load_file(tiny.path).items() if not k.startswith("first_stage_model.")}
    save_file(lora, tmp_path / "no-vae.safetensors")
    cache = HashCache()
    with pytest.raises(UnsupportedModelError, match="no VAE"):
        load_checkpoint(tmp_path / "no-vae.safetensors", hash_cache=cache)
    assert len(cache) == 0


def test_sd1_loaded_modules_compute_like_the_originals(tmp_path: Path) -> None:
    tiny = make_tiny_checkpoint(tmp_path / "tiny.safetensors", "sd1", seed=3)
    loaded = load_checkpoint(tiny.path)
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 64)
    with torch.no_grad():
        want = tiny.unet(x, 500, encoder_hidden_states=ctx).sample
        got = loaded.unet(x, 500, encoder_hidden_states=ctx).sample
        ids = torch.tensor([[49406, 320, 1125, 49407]])
        te_want = tiny.text_encoders[0](ids).last_hidden_state
        te_got = loaded.text_encoders[0](ids).last_hidden_state
    assert torch.equal(want, got)
    assert torch.equal(te_want, te_got)


def test_alphas_cumprod_matches_ldm_schedule() -> None:
    ac = sd_alphas_cumprod()
    assert ac.dtype == torch.float32 and ac.shape == (1000,)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert float(ac[0]) == pytest.approx(1 - 0.00085, rel=1e-6)
    assert float(ac[-1]) == pytest.approx(float(torch.prod(1 - betas)), rel=1e-5)
    sigmas = ((1 - ac) / ac) ** 0.5  # A1111's known sigma range for SD: 0.0292 .. 14.6146
    assert float(sigmas[0]) == pytest.approx(0.0292, abs=1e-4)
    assert float(sigmas[-1]) == pytest.approx(14.6146, abs=1e-4)


FAMILY_CASES = [
    ("sd2", "standard", {"modelspec.prediction_type": "epsilon"}, "epsilon"),
    ("sd2", "standard", {"ss_v_parameterization": "True"}, "v_prediction"),
    ("sdxl", "standard", None, "epsilon"),
    ("sdxl-refiner", "standard", None, "epsilon"),
    ("sd1", "inpainting", None, "epsilon"),
    ("sd1", "instruct-pix2pix", None, "epsilon"),
    ("sd2", "inpainting", None, "epsilon"),
    ("sdxl", "inpainting", None, "epsilon"),
]


@pytest.mark.parametrize(("family", "variant", "metadata", "prediction"), FAMILY_CASES)
def test_every_family_round_trips(tmp_path: Path, family: str, variant: str, metadata, prediction: str) -> None:
    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", family, variant, metadata=metadata)
    loaded = load_checkpoint(tiny.path)
    assert (loaded.family, loaded.detection.variant, loaded.prediction_type) == (family, variant, prediction)
    assert len(loaded.text_encoders) == len(tiny.text_encoders)
    for want, got in zip((tiny.unet, tiny.vae, *tiny.text_encoders), (loaded.unet, loaded.vae, *loaded.text_encoders)):
        assert type(want) is type(got)
        assert_same_tensors(want, got)
    expected_scale = 0.13025 if family.startswith("sdxl") else 0.18215
    assert loaded.latent_scaling_factor == pytest.approx(expected_scale)


def test_sd2_text_encoder_drops_the_last_openclip_layer(tmp_path: Path) -> None:
    from safetensors import safe_open

    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", "sd2", metadata={"modelspec.prediction_type": "v"})
    with safe_open(str(tiny.path), "pt") as f:
        layers = {k.split(".")[4] for k in f.keys() if ".resblocks." in k}
    assert layers == {"0", "1", "2"}  # the file holds one layer more than the diffusers model
    loaded = load_checkpoint(tiny.path)
    assert loaded.text_encoders[0].config.num_hidden_layers == 2


def _constant_unet_checkpoint(path: Path, bias: float) -> Path:
    """A tiny SD2 checkpoint whose UNet outputs ``bias`` everywhere (all weights zero)."""
    from helpers.tiny_checkpoints import tiny_text_encoders, tiny_unet, tiny_vae

    from sdlab.models.convert import save_single_file

    gen = torch.Generator().manual_seed(0)
    unet = tiny_unet("sd2", "standard", gen)
    with torch.no_grad():
        for p in unet.parameters():
            p.zero_()
        unet.conv_out.bias.fill_(bias)
    return save_single_file(path, unet, tiny_vae(gen), tiny_text_encoders("sd2", gen), "sd2")


@pytest.mark.parametrize(("bias", "expected"), [(-2.0, "v_prediction"), (0.0, "epsilon")])
def test_sd2_functional_test_decides_without_evidence(tmp_path: Path, bias: float, expected: str) -> None:
    path = _constant_unet_checkpoint(tmp_path / "m.safetensors", bias)
    loaded = load_checkpoint(path)
    assert loaded.prediction_type == expected
    assert f"= {bias - 0.5:.4f}" in loaded.detection.evidence[-1]


def test_sidecar_yaml_overrides_the_functional_test(tmp_path: Path) -> None:
    path = _constant_unet_checkpoint(tmp_path / "m.safetensors", 0.0)
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    loaded = load_checkpoint(path)
    assert loaded.prediction_type == "v_prediction"
    assert not any("functional" in e for e in loaded.detection.evidence)


def test_ckpt_with_nested_state_dict_loads(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", "sd1", seed=4)
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": load_file(str(tiny.path)), "global_step": 1}, ckpt)
    loaded = load_checkpoint(ckpt)
    assert loaded.family == "sd1"
    assert_same_tensors(tiny.unet, loaded.unet)
    assert_same_tensors(tiny.text_encoders[0], loaded.text_encoders[0])


@pytest.mark.parametrize("layout", ["ldm", "ldm-prefixed", "ldm-pt", "diffusers"])
def test_external_vae_replaces_the_checkpoint_vae(tmp_path: Path, layout: str) -> None:
    from helpers.tiny_checkpoints import make_tiny_vae_file
    from safetensors.torch import load_file, save_file

    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", "sd1")
    vae_file = tmp_path / "v.safetensors"
    prefix = "first_stage_model." if layout == "ldm-prefixed" else ""
    vae = make_tiny_vae_file(vae_file, seed=9, prefix=prefix)
    if layout == "ldm-pt":
        pt = tmp_path / "v.vae.pt"
        torch.save({"state_dict": load_file(str(vae_file))}, pt)
        vae_file = pt
    if layout == "diffusers":
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(vae_file))
    loaded = load_checkpoint(tiny.path, vae_path=vae_file)
    assert loaded.vae_path == vae_file
    assert_same_tensors(vae, loaded.vae)
    assert_same_tensors(tiny.unet, loaded.unet)


def test_diffusers_folder_loads_offline(tmp_path: Path) -> None:
    from helpers.tiny_checkpoints import write_diffusers_folder

    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", "sdxl")
    folder = write_diffusers_folder(tmp_path / "xl", tiny, prediction_type="v_prediction")
    loaded = load_checkpoint(folder)
    assert (loaded.family, loaded.detection.layout, loaded.prediction_type) == ("sdxl", "diffusers", "v_prediction")
    for want, got in zip((tiny.unet, tiny.vae, *tiny.text_encoders), (loaded.unet, loaded.vae, *loaded.text_encoders)):
        assert_same_tensors(want, got)


def test_half_precision_load(tmp_path: Path) -> None:
    tiny = make_tiny_checkpoint(tmp_path / "m.safetensors", "sd1")
    loaded = load_checkpoint(tiny.path, dtype=torch.float16)
    assert {p.dtype for m in (loaded.unet, loaded.vae, *loaded.text_encoders) for p in m.parameters()} == {
        torch.float16
    }
    assert torch.equal(loaded.unet.conv_in.weight, tiny.unet.conv_in.weight.half())
