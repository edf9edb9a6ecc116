"""k-diffusion samplers: exactness on a constant denoiser, noise-draw counts, callbacks, LMS, DPM fast/adaptive."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers import kdiff, kdiff_dpm
from sdlab.samplers.types import StepInfo

SIGMAS = torch.tensor([14.614643, 6.0, 2.5, 0.9, 0.3, 0.029167539, 0.0])
X0 = torch.linspace(-1.0, 1.0, 2 * 4 * 3 * 3).reshape(2, 4, 3, 3)


def constant_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    """A model that always knows the clean latent: the probability-flow ODE is then a straight line to X0."""
    assert sigma.shape == (x.shape[0],)
    return X0.clone()


class Draws:
    """A NoiseFn counting its calls (deterministic draws)."""

    def __init__(self) -> None:
        self.count = 0
        self.gen = torch.Generator().manual_seed(7)

    def __call__(self) -> Tensor:
        self.count += 1
        return torch.randn(X0.shape, generator=self.gen)


def start(sigmas: Tensor = SIGMAS) -> Tensor:
    return X0 + torch.randn(X0.shape, generator=torch.Generator().manual_seed(1)) * sigmas[0]


DETERMINISTIC = [kdiff.sample_euler, kdiff.sample_heun, kdiff.sample_dpm_2, kdiff.sample_lms, kdiff.sample_dpmpp_2m]


@pytest.mark.parametrize("fn", DETERMINISTIC, ids=lambda f: f.__name__)
def test_ode_samplers_land_on_the_clean_latent(fn: Callable[..., Tensor]) -> None:
    out = fn(constant_denoiser, start(), SIGMAS, noise=Draws())
    assert torch.allclose(out, X0, atol=1e-4)


@pytest.mark.parametrize(
    ("fn", "draws"),
    [
        (kdiff.sample_euler, 6),  # churn noise drawn every step even at s_churn 0
        (kdiff.sample_heun, 6),
        (kdiff.sample_dpm_2, 6),
        (kdiff.sample_euler_ancestral, 5),  # none on the final step to 0
        (kdiff.sample_dpm_2_ancestral, 5),
        (kdiff.sample_dpmpp_2s_ancestral, 5),
        (kdiff.sample_lms, 0),
        (kdiff.sample_dpmpp_2m, 0),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_noise_draw_counts_match_k_diffusion(fn: Callable[..., Tensor], draws: int) -> None:
    noise = Draws()
    fn(constant_denoiser, start(), SIGMAS, noise=noise)
    assert noise.count == draws


def test_callbacks_report_the_latent_at_the_start_of_each_step() -> None:
    seen: list[StepInfo] = []
    x = start()
    out = kdiff.sample_euler(constant_denoiser, x, SIGMAS, noise=Draws(), callback=seen.append)
    assert [s.i for s in seen] == list(range(len(SIGMAS) - 1))
    assert torch.equal(seen[0].x, x)
    assert [s.sigma for s in seen] == pytest.approx(SIGMAS[:-1].tolist())
    assert all(s.denoised is not None and torch.equal(s.denoised, X0) for s in seen)
    assert not torch.equal(seen[-1].x, out)


def test_ancestral_step_splits_the_variance() -> None:
    down, up = kdiff.ancestral_step(torch.tensor(2.0), torch.tensor(1.0), 1.0)
    assert float(up) == pytest.approx(math.sqrt(0.75))
    assert float(down) == pytest.approx(0.5)
    assert float(down) ** 2 + float(up) ** 2 == pytest.approx(1.0)
    down0, up0 = kdiff.ancestral_step(torch.tensor(2.0), torch.tensor(1.0), 0.0)
    assert float(down0) == 1.0 and up0 == 0.0


def test_euler_ancestral_eta_zero_equals_euler_on_the_deterministic_part() -> None:
    x = start()
    a = kdiff.sample_euler_ancestral(constant_denoiser, x, SIGMAS, noise=Draws(), eta=0.0)
    b = kdiff.sample_euler(constant_denoiser, x, SIGMAS, noise=Draws())
    assert torch.allclose(a, b, atol=1e-6)


def test_sde_samplers_query_interval_noise_per_step() -> None:
    calls: list[tuple[float, float]] = []

    def interval_noise(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        calls.append((float(sigma), float(sigma_next)))
        return torch.zeros_like(X0)

    kdiff.sample_dpmpp_2m_sde(constant_denoiser, start(), SIGMAS, noise=Draws(), noise_sampler=interval_noise)
    assert calls == [(float(SIGMAS[i]), float(SIGMAS[i + 1])) for i in range(len(SIGMAS) - 2)]


@pytest.mark.parametrize(
    "fn", [kdiff.sample_dpmpp_sde, kdiff.sample_dpmpp_2m_sde, kdiff.sample_dpmpp_3m_sde], ids=lambda f: f.__name__
)
def test_sde_samplers_without_noise_land_on_the_clean_latent(fn: Callable[..., Tensor]) -> None:
    zero = lambda sigma, sigma_next: torch.zeros_like(X0)  # noqa: E731
    out = fn(constant_denoiser, start(), SIGMAS, noise=Draws(), noise_sampler=zero)
    assert torch.allclose(out, X0, atol=1e-4)


def test_invalid_inputs_raise_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="at least 2"):
        kdiff.sample_euler(constant_denoiser, start(), torch.tensor([1.0]), noise=Draws())
    with pytest.raises(InvalidRequestError, match="solver_type"):
        kdiff.sample_dpmpp_2m_sde(constant_denoiser, start(), SIGMAS, noise=Draws(), solver_type="rk4")
    with pytest.raises(InvalidRequestError, match="order"):
        kdiff.lms_coefficient(4, SIGMAS.numpy(), 1, 0)


def test_lms_coefficients_integrate_the_lagrange_basis() -> None:
    t = SIGMAS.numpy().astype(np.float64)
    for i in range(3, 6):
        coeffs = [kdiff.lms_coefficient(4, t, i, j) for j in range(4)]
        # the basis polynomials sum to 1, so the coefficients sum to the interval length
        assert sum(coeffs) == pytest.approx(t[i + 1] - t[i], rel=1e-12)
    assert kdiff.lms_coefficient(1, t, 0, 0) == pytest.approx(t[1] - t[0])
    # order 2 on nodes t1, t0: integral of (tau - t0)/(t1 - t0) over [t1, t2]
    expected = ((t[2] - t[0]) ** 2 - (t[1] - t[0]) ** 2) / 2 / (t[1] - t[0])
    assert kdiff.lms_coefficient(2, t, 1, 0) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "orders"), [(1, [1]), (3, [2, 1]), (4, [3, 1]), (6, [3, 2, 1]), (10, [3, 3, 3, 1])])
def test_dpm_fast_orders(n: int, orders: list[int]) -> None:
    assert kdiff_dpm.dpm_fast_orders(n) == orders
    assert sum(orders) == n


def test_dpm_fast_counts_evaluations_and_draws() -> None:
    calls = []

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        calls.append(float(sigma[0]))
        return X0.clone()

    noise = Draws()
    seen: list[StepInfo] = []
    kdiff_dpm.sample_dpm_fast(model, start(), 0.029167532920837402, 14.614642143249512, 10, noise=noise,
                              callback=seen.append)
    assert len(calls) == 10
    assert noise.count == len(kdiff_dpm.dpm_fast_orders(10)) == len(seen)
    assert calls[0] == pytest.approx(14.614642, rel=1e-6)


def test_dpm_adaptive_reports_stats_and_draws_once_per_accepted_step() -> None:
    noise = Draws()
    seen: list[StepInfo] = []
    out = kdiff_dpm.sample_dpm_adaptive(constant_denoiser, start(), 0.03, 14.6, noise=noise, callback=seen.append)
    last = seen[-1].extra
    assert last["n_accept"] == noise.count
    assert last["n_accept"] + last["n_reject"] == last["steps"] == len(seen)
    assert last["nfe"] == 3 * last["steps"]
    assert seen[-1].sigma == pytest.approx(0.03, rel=1e-4)
    assert torch.isfinite(out).all()


def test_dpm_solvers_reject_bad_ranges() -> None:
    with pytest.raises(InvalidRequestError, match="positive"):
        kdiff_dpm.sample_dpm_fast(constant_denoiser, start(), 0.0, 14.6, 4, noise=Draws())
    with pytest.raises(InvalidRequestError, match="reverse"):
        kdiff_dpm.sample_dpm_adaptive(constant_denoiser, start(), 14.6, 0.03, noise=Draws())
    with pytest.raises(InvalidRequestError, match="order"):
        kdiff_dpm.sample_dpm_adaptive(constant_denoiser, start(), 0.03, 14.6, noise=Draws(), order=4)


def test_pid_controller_grows_the_step_on_small_errors_and_rejects_large_ones() -> None:
    pid = kdiff_dpm.PIDController(0.05, 0.0, 1.0, 0.0, order=1.5, accept_safety=0.81)
    assert pid.propose_step(0.01) is True and pid.h > 0.05
    h = pid.h
    assert pid.propose_step(100.0) is False and pid.h < h
