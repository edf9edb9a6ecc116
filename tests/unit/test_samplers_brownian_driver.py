"""Brownian-tree noise (seeding, sign, batching, scoped randn patch) and the sampling driver."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torchsde._brownian import brownian_interval

from sdlab.errors import CancelledError, InvalidRequestError
from sdlab.samplers.brownian import BrownianTreeNoise, schedule_range
from sdlab.samplers.denoiser import CFGEpsModel, GuidanceCore, TimestepEpsDenoiser
from sdlab.samplers.driver import SamplingJob, range_kwargs, run_sampling, sigma_schedule
from sdlab.samplers.registry import SAMPLERS, sampler_sigmas
from sdlab.samplers.sigma_model import sd_sigma_model
from sdlab.samplers.types import StepInfo

MODEL = sd_sigma_model()
SHAPE = (1, 4, 8, 8)


def test_brownian_noise_is_seeded_and_order_independent() -> None:
    x = torch.zeros(SHAPE)
    a = BrownianTreeNoise(x, 0.03, 14.6, (1234,))
    b = BrownianTreeNoise(x, 0.03, 14.6, (1234,))
    first = a(torch.tensor(14.6), torch.tensor(3.0))
    b(torch.tensor(3.0), torch.tensor(0.5))  # query another interval first
    assert torch.equal(b(torch.tensor(14.6), torch.tensor(3.0)), first)
    other = BrownianTreeNoise(x, 0.03, 14.6, (1235,))(torch.tensor(14.6), torch.tensor(3.0))
    assert not torch.equal(other, first)
    assert torch.equal(a(torch.tensor(3.0), torch.tensor(14.6)), -first)  # upward step flips the sign
    assert first.shape == SHAPE


def test_brownian_noise_is_unit_variance() -> None:
    noise = BrownianTreeNoise(torch.zeros(1, 4, 32, 32), 0.03, 14.6, (7,))(torch.tensor(5.0), torch.tensor(2.0))
    assert 0.9 < float(noise.std()) < 1.1


def test_brownian_batch_uses_one_tree_per_seed() -> None:
    pair = BrownianTreeNoise(torch.zeros(2, 4, 8, 8), 0.03, 14.6, (5, 9))(torch.tensor(4.0), torch.tensor(1.0))
    single = BrownianTreeNoise(torch.zeros(SHAPE), 0.03, 14.6, (9,))(torch.tensor(4.0), torch.tensor(1.0))
    assert torch.equal(pair[1:], single)
    with pytest.raises(InvalidRequestError, match="one seed per image"):
        BrownianTreeNoise(torch.zeros(2, 4, 8, 8), 0.03, 14.6, (5,))


def test_custom_randn_is_scoped() -> None:
    original = brownian_interval._randn
    zeros = BrownianTreeNoise(torch.zeros(SHAPE), 0.03, 14.6, (1,), randn_local=lambda seed, shape: torch.zeros(shape))
    assert torch.count_nonzero(zeros(torch.tensor(4.0), torch.tensor(1.0))) == 0
    assert brownian_interval._randn is original


def test_schedule_range() -> None:
    lo, hi = schedule_range(torch.tensor([14.6, 3.0, 0.03, 0.0]))
    assert (float(lo), float(hi)) == pytest.approx((0.03, 14.6))
    with pytest.raises(InvalidRequestError):
        schedule_range(torch.zeros(3))


class Clean:
    """A guided denoiser that returns zeros (x0 = 0) and records its inputs."""

    def __init__(self) -> None:
        self.inputs: list[tuple[Tensor, Tensor]] = []

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.inputs.append((x.clone(), sigma.clone()))
        return torch.zeros_like(x)


def _noise() -> Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))


def _job(name: str, steps: int = 10, **kw: object) -> SamplingJob:
    entry = SAMPLERS.get(name)
    sigmas = sampler_sigmas(name, "Automatic", steps, MODEL)
    fields: dict[str, object] = {"seeds": (1234,), **kw}
    return SamplingJob(entry=entry, schedule=sigmas, steps=steps,
                       model_sigma_range=(MODEL.sigma_min, MODEL.sigma_max), **fields)  # type: ignore[arg-type]


def test_txt2img_starts_at_noise_times_sigma_max() -> None:
    model, seen = Clean(), []
    job = _job("Euler")
    out = run_sampling(job, model, _noise(), _noise, callback=seen.append)
    assert torch.equal(model.inputs[0][0], _noise() * job.schedule[0])
    assert torch.allclose(out, torch.zeros(SHAPE), atol=1e-5)
    assert len(seen) == 10 and isinstance(seen[0], StepInfo)


def test_img2img_truncates_and_noises_the_init_latent() -> None:
    init = torch.full(SHAPE, 0.5)
    model = Clean()
    job = _job("Euler a", init_latent=init, t_enc=6)
    run_sampling(job, model, _noise(), _noise)
    sched = sigma_schedule(job)
    assert len(sched) == 8 and float(sched[0]) == float(job.schedule[3])
    assert torch.equal(model.inputs[0][0], init + _noise() * sched[0])
    assert len(model.inputs) == 7


def test_dpm_fast_range_inputs() -> None:
    job = _job("DPM fast", steps=6)
    assert range_kwargs(job, sigma_schedule(job)) == {"sigma_min": MODEL.sigma_min, "sigma_max": MODEL.sigma_max, "n": 6}
    img = _job("DPM fast", steps=10, init_latent=torch.zeros(SHAPE), t_enc=6)
    kw = range_kwargs(img, sigma_schedule(img))
    assert kw["n"] == 7 and float(kw["sigma_max"]) == float(img.schedule[3])
    assert float(kw["sigma_min"]) == float(img.schedule[-2])
    model = Clean()
    run_sampling(job, model, _noise(), _noise)
    assert len(model.inputs) == 6


def test_brownian_samplers_get_a_seeded_tree() -> None:
    outs = [run_sampling(_job("DPM++ 2M SDE", steps=4), Clean(), _noise(), _noise) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(InvalidRequestError, match="seed"):
        run_sampling(_job("DPM++ 2M SDE", steps=4, seeds=()), Clean(), _noise(), _noise)


def test_options_and_cancel() -> None:
    with pytest.raises(InvalidRequestError, match="does not apply"):
        run_sampling(_job("LMS", options={"s_churn": 1.0}), Clean(), _noise(), _noise)
    calls = iter([False, False, True])
    model = Clean()
    with pytest.raises(CancelledError):
        run_sampling(_job("Euler"), model, _noise(), _noise, cancel=lambda: next(calls))
    assert len(model.inputs) == 2


def test_timestep_img2img_noises_to_t_enc() -> None:
    seen: list[Tensor] = []

    def unet(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        seen.append(x.clone())
        return torch.zeros_like(x)

    cond = torch.zeros(2, 77, 8)
    model = CFGEpsModel(GuidanceCore(TimestepEpsDenoiser(unet), lambda s: cond[:1], lambda s: cond[1:], 7.0))
    timesteps = torch.arange(1, 1000, 100)
    init = torch.full(SHAPE, 0.5)
    job = SamplingJob(entry=SAMPLERS.get("DDIM"), schedule=timesteps, steps=10,
                      alphas_cumprod=MODEL.alphas_cumprod, init_latent=init, t_enc=6)
    run_sampling(job, model, _noise(), _noise)
    a = MODEL.alphas_cumprod[601]
    assert torch.allclose(seen[0][:1], init * a.sqrt() + _noise() * (1 - a).sqrt())
    assert len(seen) == 5
