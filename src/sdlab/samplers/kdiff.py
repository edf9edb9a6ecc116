"""k-diffusion-family samplers over a :class:`~sdlab.samplers.types.Denoiser`, as A1111 v1.10.1 runs them.

Written from the math to reproduce k-diffusion ``ab527a9a`` float32 arithmetic (operation order included).
One signature for all: ``fn(model, x, sigmas, *, noise, callback, **options) -> Tensor`` where ``x`` is the
latent already scaled to ``sigmas[0]``, ``sigmas`` a 1-d float32 schedule ending in 0, ``noise`` draws fresh
standard-normal noise (one call = one RNG draw, counted exactly as k-diffusion does) and ``callback`` gets a
:class:`~sdlab.samplers.types.StepInfo` with the latent at the *start* of step ``i``.

Options default to A1111's values (``eta`` 1.0 wherever a function has it). The SDE samplers take
``noise_sampler(sigma, sigma_next)`` (a :class:`~sdlab.samplers.brownian.BrownianTreeNoise` in A1111);
without one they fall back to plain draws from ``noise`` (a documented deviation: k-diffusion would build
an unseeded Brownian tree). DPM fast / DPM adaptive live in :mod:`sdlab.samplers.kdiff_dpm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.types import Denoiser, IntervalNoiseFn, NoiseFn, StepCallback, StepInfo

INF = float("inf")


def report(callback: StepCallback | None, i: int, sigma: Any, sigma_hat: Any, x: Tensor,
           denoised: Tensor | None, **extra: Any) -> None:
    """Send one :class:`StepInfo` (sigmas as Python floats) when a callback is set."""
    if callback is not None:
        callback(StepInfo(i=i, sigma=float(sigma), sigma_hat=float(sigma_hat), x=x, denoised=denoised, extra=extra))


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Karras ODE derivative ``(x - denoised) / sigma``."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Any]:
    """``(sigma_down, sigma_up)``: ``sigma_up = min(s', eta*sqrt(s'^2 (s^2 - s'^2) / s^2))``, ``sigma_down = sqrt(s'^2 - up^2)``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _check(x: Tensor, sigmas: Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise InvalidRequestError("sigmas must be a 1-d schedule with at least 2 values (one step)")
    if x.ndim < 2:
        raise InvalidRequestError(f"x must be a latent batch [B, C, ...], got shape {tuple(x.shape)}")


def _churn(x: Tensor, sigma: Tensor, n: int, noise: NoiseFn, s_churn: float, s_tmin: float, s_tmax: float,
           s_noise: float) -> tuple[Tensor, Tensor]:
    """Karras churn: always draws the noise (k-diffusion does, even at s_churn 0); returns (x, sigma_hat)."""
    gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    eps = noise() * s_noise
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def sample_euler(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn, callback: StepCallback | None = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF, s_noise: float = 1.0) -> Tensor:
    """Euler (Karras Algorithm 2 with Euler steps); one noise draw per step."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    n = len(sigmas) - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, sigmas[i], sigma_hat, x, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def sample_euler_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                           callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """Euler a: Euler step to ``sigma_down``, then ``+ noise * sigma_up`` (no draw on the last step)."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * sigma_up
    return x


def sample_heun(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn, callback: StepCallback | None = None,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF, s_noise: float = 1.0) -> Tensor:
    """Heun (Karras Algorithm 2); Euler on the final step to 0; one noise draw per step."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    n = len(sigmas) - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, sigmas[i], sigma_hat, x, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


def _log_midpoint(a: Tensor, b: Tensor) -> Tensor:
    """Geometric midpoint ``exp(lerp(log a, log b, 0.5))``."""
    return a.log().lerp(b.log(), 0.5).exp()


def sample_dpm_2(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn, callback: StepCallback | None = None,
                 s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = INF, s_noise: float = 1.0) -> Tensor:
    """DPM2: midpoint method with the midpoint in log sigma; Euler on the final step; one draw per step."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    n = len(sigmas) - 1
    for i in range(n):
        x, sigma_hat = _churn(x, sigmas[i], n, noise, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in)
        d = to_d(x, sigma_hat, denoised)
        report(callback, i, sigmas[i], sigma_hat, x, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = _log_midpoint(sigma_hat, sigmas[i + 1])
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid * s_in)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def sample_dpm_2_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                           callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """DPM2 a: DPM2 step to ``sigma_down`` then ``+ noise * sigma_up``; no draw when ``sigma_down`` is 0."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = _log_midpoint(sigmas[i], sigma_down)
            x_2 = x + d * (sigma_mid - sigmas[i])
            denoised_2 = model(x_2, sigma_mid * s_in)
            d_2 = to_d(x_2, sigma_mid, denoised_2)
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise() * s_noise * sigma_up
    return x


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over ``[t[i], t[i+1]]`` of the Lagrange basis polynomial ``j`` on nodes ``t[i], ..., t[i-order+1]``.

    Closed form in float64 (k-diffusion integrates numerically with quad; same value to ~1e-16 relative).
    """
    if order - 1 > i:
        raise InvalidRequestError(f"LMS order {order} too high for step {i}")
    nodes = [float(t[i - k]) for k in range(order) if k != j]
    poly = np.polynomial.Polynomial.fromroots(nodes) if nodes else np.polynomial.Polynomial([1.0])
    denom = float(np.prod([float(t[i - j]) - node for node in nodes])) if nodes else 1.0
    antideriv = poly.integ()
    return float((antideriv(float(t[i + 1])) - antideriv(float(t[i]))) / denom)


def sample_lms(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn, callback: StepCallback | None = None,
               order: int = 4) -> Tensor:
    """Linear multistep (order 4 by default) on the derivatives ``d``; no noise draws."""
    _check(x, sigmas)
    if order < 1:
        raise InvalidRequestError(f"LMS order must be >= 1, got {order}")
    s_in = x.new_ones([x.shape[0]])
    t = sigmas.detach().cpu().numpy()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        ds = [*ds, to_d(x, sigmas[i], denoised)][-order:]
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, t, i, j) for j in range(cur_order)]
        x = x + sum((c * d for c, d in zip(coeffs, reversed(ds))), start=torch.zeros((), dtype=x.dtype))
    return x


def _sigma_fn(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t_fn(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def sample_dpmpp_2s_ancestral(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                              callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """DPM-Solver++(2S) ancestral: 2S step to ``sigma_down`` (Euler when it is 0), then ``+ noise * sigma_up``."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, _sigma_fn(s) * s_in)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * sigma_up
    return x


def sample_dpmpp_2m(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                    callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M): second-order multistep in log sigma; first and final steps first order; no draws."""
    _check(x, sigmas)
    s_in = x.new_ones([x.shape[0]])
    old_denoised: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _interval_noise(noise: NoiseFn, noise_sampler: IntervalNoiseFn | None) -> IntervalNoiseFn:
    return noise_sampler if noise_sampler is not None else (lambda sigma, sigma_next: noise())


def sample_dpmpp_sde(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                     callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5, noise_sampler: IntervalNoiseFn | None = None) -> Tensor:
    """DPM-Solver++ (stochastic, 2 stages at ratio ``r``); Euler on the final step; interval noise per stage."""
    _check(x, sigmas)
    sample_noise = _interval_noise(noise, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(s), eta)
        s_ = _t_fn(sd)
        x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + sample_noise(_sigma_fn(t), _sigma_fn(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma_fn(s) * s_in)
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
        t_next_ = _t_fn(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + sample_noise(_sigma_fn(t), _sigma_fn(t_next)) * s_noise * su
    return x


def sample_dpmpp_2m_sde(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                        callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        solver_type: str = "midpoint", noise_sampler: IntervalNoiseFn | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE, ``solver_type`` "midpoint" (DPM++ 2M SDE) or "heun" (DPM++ 2M SDE Heun)."""
    _check(x, sigmas)
    if solver_type not in ("heun", "midpoint"):
        raise InvalidRequestError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    sample_noise = _interval_noise(noise, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    h: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                assert h_last is not None
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + sample_noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


def sample_dpmpp_3m_sde(model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn,
                        callback: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                        noise_sampler: IntervalNoiseFn | None = None) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep with SDE noise (lower order for the first steps)."""
    _check(x, sigmas)
    sample_noise = _interval_noise(noise, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, sigmas[i], sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            add, sub = _dpmpp_3m_correction(denoised, denoised_1, denoised_2, h, h_1, h_2, h_eta)
            x = x + add - sub
            if eta:
                x = x + sample_noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _dpmpp_3m_correction(denoised: Tensor, denoised_1: Tensor | None, denoised_2: Tensor | None, h: Tensor,
                         h_1: Tensor | None, h_2: Tensor | None, h_eta: Tensor) -> tuple[Tensor | float, Tensor | float]:
    """Multistep correction ``(add, subtract)`` of DPM++ 3M SDE: 2nd order with one history point, 3rd with two."""
    if h_2 is not None and denoised_1 is not None and denoised_2 is not None and h_1 is not None:
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - denoised_1) / r0
        d1_1 = (denoised_1 - denoised_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = h_eta.neg().expm1() / h_eta + 1
        phi_3 = phi_2 / h_eta - 0.5
        return phi_2 * d1, phi_3 * d2
    if h_1 is not None and denoised_1 is not None:
        d = (denoised - denoised_1) / (h_1 / h)
        return (h_eta.neg().expm1() / h_eta + 1) * d, 0.0
    return 0.0, 0.0
