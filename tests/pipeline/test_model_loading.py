"""Loading tiny single-file checkpoints: every tensor of the loaded modules equals the saved one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.tiny_checkpoints import make_tiny_checkpoint  # noqa: E402

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
