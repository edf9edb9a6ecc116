"""Denoiser wrappers, CFG batching / AND-composition and the img2img truncation helpers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.denoiser import (
    CFGDenoiser,
    CFGEpsModel,
    CompVisDenoiser,
    CompVisVDenoiser,
    GuidanceCore,
    TimestepEpsDenoiser,
    TimestepVDenoiser,
    img2img_sigmas,
    img2img_steps,
    img2img_timesteps,
    join_conds,
)
from sdlab.samplers.sigma_model import sd_sigma_model
from sdlab.samplers.types import MultiCond

MODEL = sd_sigma_model()


class RecordingUNet:
    """``unet(x, t, cond)``: returns ``fn(x, t, cond)`` and records every call."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls: list[tuple[Tensor, Tensor, Any]] = []

    def __call__(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.calls.append((x.clone(), t.clone(), cond))
        return self.fn(x, t, cond)


def test_compvis_denoiser_scales_input_and_output() -> None:
    eps = torch.full((2, 4, 2, 2), 0.5)
    unet = RecordingUNet(lambda x, t, c: eps)
    x = torch.randn(2, 4, 2, 2)
    sigma = torch.tensor([3.0, 0.5])
    out = CompVisDenoiser(unet, MODEL)(x, sigma, None)
    scale = (1 / (sigma**2 + 1) ** 0.5).reshape(2, 1, 1, 1)
    assert torch.allclose(unet.calls[0][0], x * scale)
    assert torch.equal(unet.calls[0][1], MODEL.sigma_to_t(sigma))
    assert unet.calls[0][1].dtype == torch.float32
    assert torch.allclose(out, x - sigma.reshape(2, 1, 1, 1) * eps)


def test_v_denoiser_recovers_x0_from_the_true_velocity() -> None:
    x0 = torch.randn(1, 4, 2, 2)
    noise = torch.randn(1, 4, 2, 2)
    sigma = torch.tensor([2.5])
    x = x0 + sigma * noise
    v = (noise - sigma * x0) / (sigma**2 + 1) ** 0.5
    out = CompVisVDenoiser(lambda xi, t, c: v, MODEL)(x, sigma, None)
    assert torch.allclose(out, x0, atol=1e-5)


def test_timestep_wrappers() -> None:
    x = torch.randn(1, 4, 2, 2)
    t = torch.tensor([500.0])
    assert torch.equal(TimestepEpsDenoiser(lambda xi, ti, c: xi * 2)(x, t, None), x * 2)
    ac = MODEL.alphas_cumprod
    eps = torch.randn(1, 4, 2, 2)
    x0 = torch.randn(1, 4, 2, 2)
    a = ac[500]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    got = TimestepVDenoiser(lambda xi, ti, c: v, ac)(xt, t, None)
    assert torch.allclose(got, eps, atol=1e-5)


def _cond_unet(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    """Output depends on the conditioning row value, so guidance is visible."""
    return x * 0 + cond[:, 0, 0].reshape(-1, 1, 1, 1)


def test_cfg_single_call_batch_and_guidance_formula() -> None:
    unet = RecordingUNet(_cond_unet)
    cond, uncond = torch.full((1, 77, 8), 1.0), torch.full((1, 77, 8), -1.0)
    core = GuidanceCore(TimestepEpsDenoiser(unet), lambda s: cond, lambda s: uncond, cfg_scale=7.0)
    out = CFGDenoiser(core)(torch.zeros(1, 4, 2, 2), torch.tensor([3.0]))
    assert len(unet.calls) == 1 and unet.calls[0][0].shape[0] == 2
    assert torch.equal(unet.calls[0][2][:, 0, 0], torch.tensor([1.0, -1.0]))
    assert torch.allclose(out, torch.full((1, 4, 2, 2), -1.0 + (1.0 - -1.0) * 7.0))


def test_cfg_and_composition_weights() -> None:
    unet = RecordingUNet(_cond_unet)
    rows = torch.stack([torch.full((77, 8), 2.0), torch.full((77, 8), 4.0), torch.full((77, 8), 1.0)])
    multi = MultiCond((((0, 0.5), (1, 0.25)), ((2, 1.0),)), rows)
    uncond = torch.zeros(2, 77, 8)
    core = GuidanceCore(TimestepEpsDenoiser(unet), lambda s: multi, lambda s: uncond, cfg_scale=2.0)
    out = CFGDenoiser(core)(torch.zeros(2, 1, 1, 1), torch.tensor([1.0, 1.0]))
    assert unet.calls[0][0].shape[0] == 5  # 3 cond rows + 2 uncond rows in one call
    assert float(out[0]) == pytest.approx(0 + 2.0 * 0.5 * 2.0 + 4.0 * 0.25 * 2.0)
    assert float(out[1]) == pytest.approx(1.0 * 1.0 * 2.0)


def test_cfg_mismatched_token_counts_use_two_calls() -> None:
    unet = RecordingUNet(_cond_unet)
    cond, uncond = torch.full((1, 154, 8), 1.0), torch.full((1, 77, 8), -1.0)
    assert join_conds(cond, uncond) is None
    core = GuidanceCore(TimestepEpsDenoiser(unet), lambda s: cond, lambda s: uncond, cfg_scale=3.0)
    out = CFGDenoiser(core)(torch.zeros(1, 1, 1, 1), torch.tensor([1.0]))
    assert len(unet.calls) == 2
    assert float(out) == pytest.approx(-1.0 + 2.0 * 3.0)


def test_cfg_step_counter_drives_the_schedule() -> None:
    asked: list[int] = []

    def cond_at(step: int) -> Tensor:
        asked.append(step)
        return torch.full((1, 77, 8), float(step))

    core = GuidanceCore(TimestepEpsDenoiser(_cond_unet), cond_at, lambda s: torch.zeros(1, 77, 8), cfg_scale=1.0)
    model = CFGDenoiser(core)
    outs = [float(model(torch.zeros(1, 1, 1, 1), torch.tensor([1.0]))) for _ in range(3)]
    assert asked == [0, 1, 2] and model.step == 3
    assert outs == [0.0, 1.0, 2.0]


def test_cfg_eps_model_scale_factor_and_uncond() -> None:
    cond, uncond = torch.full((1, 77, 8), 1.0), torch.full((1, 77, 8), -1.0)
    model = CFGEpsModel(GuidanceCore(TimestepEpsDenoiser(_cond_unet), lambda s: cond, lambda s: uncond, 7.0))
    out = model(torch.zeros(1, 1, 1, 1), torch.tensor([10.0]), cfg_scale_factor=1 / 12.5)
    assert float(out.uncond) == -1.0
    assert float(out.guided) == pytest.approx(-1.0 + 2.0 * 0.56)


def test_cfg_rejects_batch_mismatch() -> None:
    multi = MultiCond.single(torch.zeros(1, 77, 8), 1)
    core = GuidanceCore(TimestepEpsDenoiser(_cond_unet), lambda s: multi, lambda s: torch.zeros(2, 77, 8), 7.0)
    with pytest.raises(InvalidRequestError, match="2"):
        CFGDenoiser(core)(torch.zeros(2, 1, 1, 1), torch.tensor([1.0, 1.0]))


def test_img2img_steps_rules() -> None:
    assert img2img_steps(10, 0.6) == (10, 6)
    assert img2img_steps(10, 1.0) == (10, 9)  # strength capped at 0.999
    assert img2img_steps(10, 0.5, fix_steps=True) == (20, 9)
    with pytest.raises(InvalidRequestError, match="strength"):
        img2img_steps(10, 1.5)


def test_img2img_sigmas_and_timesteps_truncate() -> None:
    sigmas = torch.arange(11, 0, -1, dtype=torch.float32) - 1  # 10, 9, ..., 0
    sched = img2img_sigmas(sigmas, 10, 0.6)
    assert sched.tolist() == sigmas[3:].tolist() and len(sched) == 8
    assert img2img_sigmas(torch.arange(21, 0, -1, dtype=torch.float32), 10, 0.5, fix_steps=True)[0] == 11
    timesteps = torch.arange(1, 1000, 100)
    head, noise_t = img2img_timesteps(timesteps, 10, 0.6)
    assert head.tolist() == [1, 101, 201, 301, 401, 501] and noise_t == 601
    with pytest.raises(InvalidRequestError, match="sigmas for 20 steps"):
        img2img_sigmas(sigmas[:5], 20, 0.3)


def test_cfg_inpaint_blend_keeps_the_masked_region() -> None:
    cond, uncond = torch.full((1, 77, 8), 1.0), torch.full((1, 77, 8), -1.0)
    core = GuidanceCore(TimestepEpsDenoiser(_cond_unet), lambda s: cond, lambda s: uncond, cfg_scale=1.0)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    init = torch.full((1, 1, 1, 2), 5.0)
    out = CFGDenoiser(core, init_latent=init, mask=mask)(torch.zeros(1, 1, 1, 2), torch.tensor([1.0]))
    assert out.flatten().tolist() == [5.0, 1.0]
