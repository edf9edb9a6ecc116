"""DDIM, DDIM CFG++, PLMS and UniPC against every samplers.json case (README section 7), plus pure helpers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sampler_vectors_harness import EpsCFG, Noise, Recorder, alphas_cumprod, case_id, cases, check_run, init_latent
from sampler_vectors_harness import latent, vectors
from sdlab.errors import InvalidRequestError
from sdlab.samplers.timesteps import (
    ddim_timesteps,
    img2img_timesteps,
    noise_latent,
    plms_eps,
    sample_ddim,
    sample_ddim_cfgpp,
    sample_plms,
)
from sdlab.samplers.unipc import sample_unipc

SAMPLERS = {"DDIM": sample_ddim, "DDIM CFG++": sample_ddim_cfgpp, "PLMS": sample_plms, "UniPC": sample_unipc}


def _txt2img_cases() -> list[Any]:
    return [pytest.param(c, id=case_id(c)) for c in cases(*SAMPLERS)]


@pytest.mark.parametrize("case", _txt2img_cases())
def test_txt2img_case(case: dict[str, Any]) -> None:
    timesteps = ddim_timesteps(case["steps"])
    assert timesteps.tolist() == case["timesteps"]
    rec = Recorder()
    noise = Noise(rec)
    x = noise()
    torch.testing.assert_close(x, latent(vectors()["noise_reference"]["draws"][0]), rtol=0, atol=0)
    final = SAMPLERS[case["sampler"]](
        EpsCFG(rec), x, timesteps, alphas_cumprod(), noise=noise, callback=rec.callback
    )
    check_run(case, rec, final)


def _img2img_cases() -> list[Any]:
    return [pytest.param(c, id=case_id(c)) for c in vectors()["img2img"]["cases"] if c["sampler"] in SAMPLERS]


@pytest.mark.parametrize("case", _img2img_cases())
def test_img2img_case(case: dict[str, Any]) -> None:
    truncated, t_enc, t_noise = img2img_timesteps(case["steps"], case["denoising_strength"])
    assert truncated.tolist() == case["sampler_function_kwargs"]["timesteps"]
    assert t_noise == case["timesteps"][t_enc]
    init = init_latent()
    torch.testing.assert_close(init, latent(case["init_latent"]), rtol=0, atol=0)
    rec = Recorder()
    noise = Noise(rec)
    x = noise_latent(init, noise(), t_noise, alphas_cumprod())
    torch.testing.assert_close(x, latent(case["x_start"]), rtol=1e-6, atol=1e-6)
    final = SAMPLERS[case["sampler"]](
        EpsCFG(rec), x, truncated, alphas_cumprod(), noise=noise, callback=rec.callback
    )
    check_run(case, rec, final)


def test_ddim_timesteps_rule() -> None:
    assert ddim_timesteps(4).tolist() == [1, 251, 501, 751]
    assert ddim_timesteps(4).dtype == torch.int64
    assert len(ddim_timesteps(30)) == 31  # 1000 // 30 = 33 -> 0, 33, ..., 990
    assert ddim_timesteps(1).tolist() == [1]
    assert ddim_timesteps(1000)[-1].item() == 999  # 999 + 1 clipped
    with pytest.raises(InvalidRequestError):
        ddim_timesteps(0)


def test_img2img_timesteps_rules() -> None:
    truncated, t_enc, t_noise = img2img_timesteps(20, 0.75)
    assert (t_enc, t_noise, truncated.tolist()[-1]) == (15, 751, 701)
    _, t_enc, t_noise = img2img_timesteps(10, 1.0)  # strength capped at 0.999
    assert (t_enc, t_noise) == (9, 901)
    truncated, t_enc, t_noise = img2img_timesteps(10, 0.5, fix_steps=True)  # 20-step grid, t_enc 9
    assert (len(truncated), t_enc, t_noise) == (9, 9, 451)
    with pytest.raises(InvalidRequestError):
        img2img_timesteps(10, 1.5)


def test_plms_eps_is_exact_for_polynomial_history() -> None:
    # Adams-Bashforth weights sum to 1: a constant eps history gives that constant back.
    e = torch.full((1, 4, 2, 2), 0.5)
    for n in (1, 2, 3):
        torch.testing.assert_close(plms_eps(e, [e] * n), e)
    # Linear history e_k = k: AB2 extrapolates (3*2 - 1)/2 = 2.5.
    assert plms_eps(torch.tensor(2.0), [torch.tensor(1.0)]).item() == pytest.approx(2.5)


def test_unipc_img2img_starts_at_the_truncated_grid_end() -> None:
    rec = Recorder()
    truncated, _, _ = img2img_timesteps(10, 0.6)
    x = torch.ones(1, 4, 8, 8)
    sample_unipc(EpsCFG(rec), x, truncated, alphas_cumprod(), noise=Noise(rec), callback=rec.callback, is_img2img=True)
    model_times = [float(c["t"][0]) for c in rec.calls]
    assert model_times[0] == pytest.approx(501.0, abs=1e-3)  # (T[-1]/1000 + 1/1000 - 1/1000) * 1000
    assert len(model_times) == len(truncated) == len(rec.callbacks)
    assert model_times == sorted(model_times, reverse=True)


def test_unipc_needs_its_order_in_steps() -> None:
    rec = Recorder()
    with pytest.raises(InvalidRequestError):
        sample_unipc(EpsCFG(rec), torch.ones(1, 4, 8, 8), ddim_timesteps(2), alphas_cumprod(), noise=Noise(rec))


def test_ddim_without_updates_returns_input() -> None:
    rec = Recorder()
    x = torch.ones(1, 4, 8, 8)
    out = sample_ddim(EpsCFG(rec), x, ddim_timesteps(1), alphas_cumprod(), noise=Noise(rec), callback=None)
    assert torch.equal(out, x) and not rec.calls and rec.draws == 0
