"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes") as A1111 v1.10.1.

Below 20 steps it is plain Heun over the given sigmas (no churn noise). From 20 steps the schedule is
rebuilt as Karras(steps - K*R points) over the given schedule's ends (sigmas[-2] .. sigmas[0]) + 0, with
K = 9 restart steps and R = 1 restart (from 36 steps K = steps // 4, R = 2). After the step landing on the
sigma nearest 0.1, the K step pairs of Karras(K + 1, that sigma, the sigma nearest 2) without its 0 are
inserted R times; each restart jumps back up by adding noise ``sqrt(s_old^2 - s_last^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sdlab.samplers.schedules import get_sigmas
from sdlab.samplers.sigma_model import sd_sigma_model
from sdlab.samplers.timesteps import sqrt_f32
from sdlab.samplers.types import Denoiser, NoiseFn, StepCallback, StepInfo

#: From this many steps on, A1111 inserts restarts (below it Restart is Heun).
RESTART_MIN_STEPS = 20
#: From this many steps on, A1111 uses steps // 4 restart steps and two restarts.
RESTART_LONG_STEPS = 36
#: Restart segment: begins after the sigma nearest RESTART_SIGMA_MIN, jumps back to the sigma nearest RESTART_SIGMA_MAX.
RESTART_SIGMA_MIN = 0.1
RESTART_SIGMA_MAX = 2.0


@dataclass(frozen=True)
class RestartPlan:
    """The Heun sub-steps of a Restart run: ``pairs[k] = (sigma_from, sigma_to)`` as 0-d float32 tensors."""

    pairs: tuple[tuple[Tensor, Tensor], ...]


def _karras(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """k-diffusion ``get_sigmas_karras(n, sigma_min, sigma_max)`` (rho 7, final 0); the table is unused."""
    return get_sigmas("Karras", n, sd_sigma_model(), sigma_min=sigma_min, sigma_max=sigma_max)


def _nearest(sigmas: Tensor, value: float) -> int:
    return int(torch.argmin(abs(sigmas - value), dim=0))


def restart_plan(sigmas: Tensor) -> RestartPlan:
    """A1111's automatic restart list for a schedule of ``len(sigmas) - 1`` steps (see the module doc)."""
    steps = sigmas.shape[0] - 1
    if steps < RESTART_MIN_STEPS:
        return RestartPlan(tuple(zip(sigmas[:-1], sigmas[1:])))
    restart_steps, restart_times = (steps // 4, 2) if steps >= RESTART_LONG_STEPS else (9, 1)
    sigmas = _karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item())
    min_idx = _nearest(sigmas, RESTART_SIGMA_MIN)
    max_idx = _nearest(sigmas, RESTART_SIGMA_MAX)
    pairs: list[tuple[Tensor, Tensor]] = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 == min_idx and max_idx < min_idx:
            inner = _karras(restart_steps + 1, sigmas[min_idx].item(), sigmas[max_idx].item())[:-1]
            pairs.extend(list(zip(inner[:-1], inner[1:])) * restart_times)
    return RestartPlan(tuple(pairs))


def _heun_step(
    model: Denoiser, x: Tensor, old: Tensor, new: Tensor, i: int, callback: StepCallback | None
) -> Tensor:
    """One Heun step from ``old`` to ``new`` (Euler when ``new`` is 0); reports at its start."""
    s_in = x.new_ones([x.shape[0]])
    denoised = model(x, old * s_in)
    d = (x - denoised) / old
    if callback is not None:
        callback(StepInfo(i=i, sigma=new.item(), sigma_hat=old.item(), x=x, denoised=denoised))
    dt = new - old
    if new == 0:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = (x_2 - model(x_2, new * s_in)) / new
    return x + (d + d_2) / 2 * dt


def sample_restart(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: NoiseFn,
    callback: StepCallback | None = None,
    s_noise: float = 1.0,
) -> Tensor:
    """A1111 Restart sampler over ``sigmas`` (float32, ending in 0); ``x`` is scaled to ``sigmas[0]``.

    One noise draw per restart; callbacks at the start of every Heun sub-step (``i`` counts sub-steps).
    """
    last = None
    for i, (old, new) in enumerate(restart_plan(sigmas).pairs):
        if last is not None and last < old:
            x = x + noise() * s_noise * sqrt_f32(old**2 - last**2)
        x = _heun_step(model, x, old, new, i, callback)
        last = new
    return x


__all__ = ["RestartPlan", "restart_plan", "sample_restart"]
