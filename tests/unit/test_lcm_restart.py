"""LCM and Restart against every samplers.json case (README section 7), plus their pure helpers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sampler_vectors_harness import CompVisDenoiser, DenoiserCFG, Noise, Recorder, alphas_cumprod, case_id, cases
from sampler_vectors_harness import check_run
from sdlab.errors import InvalidRequestError
from sdlab.samplers.lcm import LCMDenoiser, LCMTable, lcm_sigmas, sample_lcm
from sdlab.samplers.restart import restart_plan, sample_restart


def _params(sampler: str) -> list[Any]:
    return [pytest.param(c, id=case_id(c)) for c in cases(sampler)]


def _run(case: dict[str, Any], sampler: Any, inner: Any, rec: Recorder, sigmas: torch.Tensor) -> torch.Tensor:
    noise = Noise(rec)
    x = noise() * sigmas[0]
    return sampler(DenoiserCFG(rec, inner), x, sigmas, noise=noise, callback=rec.callback)


@pytest.mark.parametrize("case", _params("LCM"))
def test_lcm_case(case: dict[str, Any]) -> None:
    sigmas = lcm_sigmas(case["schedule_type"], case["steps"], alphas_cumprod())
    torch.testing.assert_close(sigmas, torch.tensor(case["sigmas"]), rtol=1e-6, atol=0)
    rec = Recorder()
    final = _run(case, sample_lcm, LCMDenoiser.from_alphas_cumprod(rec.unet, alphas_cumprod()), rec, sigmas)
    check_run(case, rec, final)


@pytest.mark.parametrize("case", _params("Restart"))
def test_restart_case(case: dict[str, Any]) -> None:
    rec = Recorder()
    sigmas = torch.tensor(case["sigmas"])
    final = _run(case, sample_restart, CompVisDenoiser.build(rec.unet, alphas_cumprod()), rec, sigmas)
    check_run(case, rec, final)


def test_lcm_table_timesteps() -> None:
    table = LCMTable.from_alphas_cumprod(alphas_cumprod())
    assert table.sigmas.shape == (50,)
    assert table.sigma_to_t(table.sigmas).tolist() == list(range(19, 1000, 20))
    assert table.sigma_to_t(torch.tensor([100.0, 1e-4])).tolist() == [999, 19]
    assert table.sigma_to_t(table.sigmas).dtype == torch.int64
    torch.testing.assert_close(table.t_to_sigma(torch.tensor([19.0, 999.0])), table.sigmas[[0, -1]])


def test_lcm_rejects_table_schedules() -> None:
    with pytest.raises(InvalidRequestError):
        lcm_sigmas("SGM Uniform", 4, alphas_cumprod())
    with pytest.raises(InvalidRequestError):
        lcm_sigmas("Karras", 0, alphas_cumprod())


def test_lcm_final_step_adds_no_noise() -> None:
    draws: list[int] = []

    def noise() -> torch.Tensor:
        draws.append(1)
        return torch.ones(1, 1)

    sigmas = torch.tensor([2.0, 1.0, 0.0])
    out = sample_lcm(lambda x, s: x * 0.5, torch.full((1, 1), 4.0), sigmas, noise=noise)
    assert out.item() == pytest.approx((4.0 * 0.5 + 1.0) * 0.5) and len(draws) == 1


def test_restart_plan_shapes() -> None:
    short = torch.tensor(next(c for c in cases("Restart") if c["steps"] == 10)["sigmas"])  # plain Heun pairs
    assert len(restart_plan(short).pairs) == 10
    karras20 = next(c for c in cases("Restart") if c["steps"] == 20 and "identical_to" not in c)
    pairs = restart_plan(torch.tensor(karras20["sigmas"])).pairs
    assert len(pairs) == 20  # 11 Karras steps + 9 restart pairs
    jumps = [k for k in range(1, len(pairs)) if pairs[k][0] > pairs[k - 1][1]]
    assert len(jumps) == 1 and pairs[jumps[0]][0].item() == pytest.approx(2.232161, rel=1e-6)
    assert pairs[jumps[0] - 1][1].item() == pytest.approx(0.07436363, rel=1e-6)


def test_restart_long_runs_restart_twice() -> None:
    sigmas = torch.cat([torch.logspace(1.16, -1.5, 40), torch.zeros(1)])
    pairs = restart_plan(sigmas).pairs
    jumps = [k for k in range(1, len(pairs)) if pairs[k][0] > pairs[k - 1][1]]
    assert len(jumps) == 2  # 40 // 4 = 10 restart steps, twice: 20 Karras steps + 2 * 10 pairs
    assert len(pairs) == 40
