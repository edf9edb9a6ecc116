"""DPM fast and DPM adaptive: DPM-Solver (Lu et al. 2022) in ``t = -log sigma``, as k-diffusion ``ab527a9a`` runs it.

Both receive the noise range ``sigma_min`` / ``sigma_max`` instead of a schedule (A1111: the model's range in
txt2img, ``sigma_sched[-2]`` / ``sigma_sched[0]`` in img2img). With ``eta`` > 0 (A1111's default 1.0) every
step goes to the ancestral ``sigma_down`` and adds ``draw * su``. Callbacks: DPM fast once per solver step
with the latent at its start; DPM adaptive after every attempt, with its stats in ``StepInfo.extra``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.kdiff import ancestral_step, report
from sdlab.samplers.types import Denoiser, NoiseFn, StepCallback

EpsCache = dict[str, Tensor]


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t(sigma: Tensor) -> Tensor:
    return -sigma.log()


@dataclass
class _Solver:
    """DPM-Solver-1/2/3 steps over a denoiser; counts model evaluations in ``nfe``."""

    model: Denoiser
    nfe: int = 0

    def eps(self, cache: EpsCache, key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = _sigma(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma)) / _sigma(t)
            self.nfe += 1
        return cache[key]

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: EpsCache) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        return x - _sigma(t_next) * h.expm1() * eps

    def step_2(self, x: Tensor, t: Tensor, t_next: Tensor, cache: EpsCache, r1: float = 1 / 2) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: Tensor, t: Tensor, t_next: Tensor, cache: EpsCache, r1: float = 1 / 3,
               r2: float = 2 / 3) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def step(self, order: int, x: Tensor, t: Tensor, t_next: Tensor, cache: EpsCache) -> Tensor:
        steps: dict[int, Callable[[Tensor, Tensor, Tensor, EpsCache], Tensor]] = {
            1: self.step_1, 2: self.step_2, 3: self.step_3}
        return steps[order](x, t, t_next, cache)


def _ancestral_target(t: Tensor, t_next: Tensor, t_end: Tensor, eta: float) -> tuple[Tensor, Tensor | float]:
    """``(t_next_, su)``: aim at ``sigma_down`` (capped at ``t_end``), noise amount restoring ``sigma(t_next)``."""
    if not eta:
        return t_next, 0.0
    sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_next_ = torch.minimum(t_end, _t(sd))
    su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
    return t_next_, su


def _check_range(sigma_min: float | Tensor, sigma_max: float | Tensor) -> tuple[Tensor, Tensor]:
    if float(sigma_min) <= 0 or float(sigma_max) <= 0:
        raise InvalidRequestError("sigma_min and sigma_max must be positive for DPM fast / DPM adaptive")
    return _t(torch.as_tensor(sigma_max, dtype=torch.float32)), _t(torch.as_tensor(sigma_min, dtype=torch.float32))


def dpm_fast_orders(nfe: int) -> list[int]:
    """Solver orders for ``nfe`` evaluations: ``[3]*(m-2) + [2, 1]`` if nfe % 3 == 0 else ``[3]*(m-1) + [nfe % 3]``, m = nfe//3 + 1."""
    m = nfe // 3 + 1
    return [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]


def sample_dpm_fast(model: Denoiser, x: Tensor, sigma_min: float | Tensor, sigma_max: float | Tensor, n: int, *,
                    noise: NoiseFn, callback: StepCallback | None = None, eta: float = 1.0,
                    s_noise: float = 1.0) -> Tensor:
    """DPM fast: ``n`` model evaluations over ``floor(n/3)+1`` equal steps in ``t`` from sigma_max to sigma_min."""
    if n < 1:
        raise InvalidRequestError(f"DPM fast needs n >= 1 model evaluations, got {n}")
    t_start, t_end = _check_range(sigma_min, sigma_max)
    if not t_end > t_start and eta:
        raise InvalidRequestError("eta must be 0 for reverse sampling (sigma_min above sigma_max)")
    solver = _Solver(model)
    orders = dpm_fast_orders(n)
    ts = torch.linspace(t_start, t_end, len(orders) + 1, device=x.device)
    for i, order in enumerate(orders):
        cache: EpsCache = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = _ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        report(callback, i, _sigma(ts[i]), _sigma(t), x, x - _sigma(t) * eps)
        x = solver.step(order, x, t, t_next_, cache)
        x = x + su * s_noise * noise()
    return x


@dataclass
class PIDController:
    """PID step-size controller on inverse errors (k-diffusion ``PIDStepSizeController``)."""

    h: float
    pcoeff: float
    icoeff: float
    dcoeff: float
    order: float = 1.0
    accept_safety: float = 0.8
    eps: float = 1e-8
    errs: list[float] = field(default_factory=list)

    def propose_step(self, error: float) -> bool:
        """Scale ``h`` by ``1 + atan(factor - 1)``; accept when the factor reaches ``accept_safety``."""
        b1 = (self.pcoeff + self.icoeff + self.dcoeff) / self.order
        b2 = -(self.pcoeff + 2 * self.dcoeff) / self.order
        b3 = self.dcoeff / self.order
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** b1 * self.errs[1] ** b2 * self.errs[2] ** b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


def sample_dpm_adaptive(model: Denoiser, x: Tensor, sigma_min: float | Tensor, sigma_max: float | Tensor, *,
                        noise: NoiseFn, callback: StepCallback | None = None, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0,
                        dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 1.0,
                        s_noise: float = 1.0) -> Tensor:
    """DPM adaptive: embedded order-(2,3) (or (1,2)) pairs with PID step control in ``t``; ignores step counts.

    The controller order is 1.5 when ``eta`` is set (ancestral), else ``order``. One draw per accepted step.
    """
    if order not in (2, 3):
        raise InvalidRequestError(f"DPM adaptive order must be 2 or 3, got {order}")
    t_start, t_end = _check_range(sigma_min, sigma_max)
    forward = bool(t_end > t_start)
    if not forward and eta:
        raise InvalidRequestError("eta must be 0 for reverse sampling (sigma_min above sigma_max)")
    solver = _Solver(model)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_prev = t_start, x
    pid = PIDController(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order,
                        accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        cache: EpsCache = {}
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        t_, su = _ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - _sigma(s) * eps
        if order == 2:
            x_low = solver.step_1(x, s, t_, cache)
            x_high = solver.step_2(x, s, t_, cache)
        else:
            x_low = solver.step_2(x, s, t_, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(float(error)):
            x_prev = x_low
            x = x_high + su * s_noise * noise()
            s = t
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["nfe"] = solver.nfe
        info["steps"] += 1
        report(callback, info["steps"] - 1, _sigma(s), _sigma(s), x, denoised, error=float(error), h=pid.h, **info)
    return x
