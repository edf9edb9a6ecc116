"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), as A1111 v1.10.1 runs it.

A1111's settings: variant B(h) = h ("bh1"), order 3, multistep, data prediction (x0 model), lower order
at the final steps, no thresholding, time-uniform steps. The noise schedule is the discrete VP schedule of
``alphas_cumprod`` with ``log alpha_t = 0.5 * log(ac)`` linear in continuous time on the grid
``t_k = (k + 1) / 1000``; the solver runs over ``linspace(t_T, 1/1000, N + 1)`` (``t_T = 1``, or
``T[-1]/1000 + 1/1000`` for img2img) and the model sees ``(t - 1/1000) * 1000``. All arithmetic is float32.

Per step (lambda = log(alpha/sigma), h = lambda_t - lambda_s, predictions m_i of x0 at earlier times):
``x_t = sigma_t/sigma_s * x - alpha_t*(e^{-h} - 1)*m_0 - alpha_t*B(h)*sum_k rho_k * D_k`` with
``D_k = (m_k - m_0)/r_k``, ``r_k = (lambda_k - lambda_s)/h``, and ``rho`` solving ``R rho = b``
(``R_ij = r_j^i``, ``b_i = i! * phi_{i+1}(-h) * (-h) / B(h)``); the corrector repeats the step with the model
value at the predicted point (reused as the next step's history), except on the final step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.timesteps import sqrt_f32
from sdlab.samplers.types import EpsModel, NoiseFn, StepCallback, StepInfo

#: A1111's uni_pc_order default.
UNIPC_ORDER = 3


@dataclass(frozen=True)
class DiscreteVPSchedule:
    """Piecewise-linear ``log alpha(t)`` over ``t_k = (k+1)/N`` for a discrete alpha-bar table (float32)."""

    t_grid: Tensor
    log_alpha: Tensor

    @staticmethod
    def from_alphas_cumprod(alphas_cumprod: Tensor) -> DiscreteVPSchedule:
        n = alphas_cumprod.shape[0]
        return DiscreteVPSchedule(
            t_grid=torch.linspace(0.0, 1.0, n + 1)[1:], log_alpha=0.5 * torch.log(alphas_cumprod.float())
        )

    @property
    def total_n(self) -> int:
        return self.t_grid.shape[0]

    def log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log alpha_t`` for continuous ``t`` (extrapolated linearly outside the grid)."""
        return interpolate(t, self.t_grid, self.log_alpha)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_mean_coeff(t))

    def std(self, t: Tensor) -> Tensor:
        """``sigma_t = sqrt(1 - alpha_t^2)``."""
        return sqrt_f32(1.0 - torch.exp(2.0 * self.log_mean_coeff(t)))

    def lam(self, t: Tensor) -> Tensor:
        """Half log-SNR ``lambda_t = log alpha_t - log sigma_t``."""
        la = self.log_mean_coeff(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))


def interpolate(x: Tensor, xp: Tensor, yp: Tensor) -> Tensor:
    """Piecewise-linear ``y(x)`` through increasing keypoints ``(xp, yp)``; the end segments extend outwards."""
    k = xp.shape[0]
    hi = torch.searchsorted(xp, x.contiguous()).clamp(1, k - 1)
    lo = hi - 1
    x0, x1, y0, y1 = xp[lo], xp[hi], yp[lo], yp[hi]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


@dataclass(frozen=True)
class _Point:
    """A solver state at continuous time ``t`` ([B]): the x0 prediction there."""

    t: Tensor
    model: Tensor


def _bh_coefficients(rks: Tensor, hh: Tensor, order: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(R, b, h_phi_1)`` of the B(h)=h ('bh1') UniPC linear system for ``order`` with ratios ``rks``."""
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / hh)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(b), h_phi_1


def _expand(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class _Solver:
    """UniPC bh1 multistep solver state-free helpers over one schedule and model."""

    ns: DiscreteVPSchedule
    model: EpsModel

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """Data prediction ``(x - sigma_t * eps) / alpha_t`` with eps at model time ``(t - 1/N) * 1000``."""
        eps = self.model(x, (t - 1.0 / self.ns.total_n) * 1000.0).guided
        return (x - _expand(self.ns.std(t), x) * eps) / _expand(self.ns.alpha(t), x)

    def update(
        self, x: Tensor, history: list[_Point], t: Tensor, order: int, use_corrector: bool
    ) -> tuple[Tensor, Tensor | None]:
        """One predictor(-corrector) step from ``history[-1]`` to ``t``; returns ``(x_t, model_t or None)``."""
        ns, last = self.ns, history[-1]
        lambda_s, lambda_t = ns.lam(last.t), ns.lam(t)
        alpha_t = torch.exp(ns.log_mean_coeff(t))
        h = lambda_t - lambda_s
        rks, d1s = [], []
        for i in range(1, order):
            prev = history[-(i + 1)]
            rk = ((ns.lam(prev.t) - lambda_s) / h)[0]
            rks.append(rk)
            d1s.append((prev.model - last.model) / rk)
        rks.append(torch.ones((), dtype=h.dtype))
        hh = -h[0]
        r, b, h_phi_1 = _bh_coefficients(torch.stack(rks), hh, order)
        x_base = _expand(ns.std(t) / ns.std(last.t), x) * x - _expand(alpha_t * h_phi_1, x) * last.model
        scale = _expand(alpha_t * hh, x)
        d1 = torch.stack(d1s, dim=1) if d1s else None
        x_t = x_base
        if d1 is not None:
            rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
            x_t = x_base - scale * torch.einsum("k,bkchw->bchw", rhos_p, d1)
        if not use_corrector:
            return x_t, None
        rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r, b)
        model_t = self.x0(x_t, t)
        corr = torch.einsum("k,bkchw->bchw", rhos_c[:-1], d1) if d1 is not None else 0
        return x_base - scale * (corr + rhos_c[-1] * (model_t - last.model)), model_t


def unipc_times(n: int, alphas_cumprod_len: int, t_start: Tensor | float = 1.0) -> Tensor:
    """The solver's continuous times ``linspace(t_start, 1/len, n + 1)`` (float32)."""
    return torch.linspace(t_start, 1.0 / alphas_cumprod_len, n + 1)


def sample_unipc(
    model: EpsModel,
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    *,
    noise: NoiseFn | None = None,
    callback: StepCallback | None = None,
    is_img2img: bool = False,
) -> Tensor:
    """A1111 UniPC: ``N = len(timesteps)`` steps (only the count is used), ``N`` model calls, deterministic.

    ``is_img2img`` starts at ``timesteps[-1]/1000 + 1/1000`` instead of t = 1 (A1111's img2img rule).
    Raises :class:`InvalidRequestError` below 3 steps (A1111 asserts ``steps >= uni_pc_order``).
    """
    n = len(timesteps)
    if n < UNIPC_ORDER:
        raise InvalidRequestError(f"UniPC needs at least {UNIPC_ORDER} steps (its order), got {n}")
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else 1.0
    ns = DiscreteVPSchedule.from_alphas_cumprod(alphas_cumprod)
    solver = _Solver(ns, model)
    times = unipc_times(n, ns.total_n, t_start)
    batch = x.shape[0]
    t0 = times[0].expand(batch)
    history = [_Point(t0, solver.x0(x, t0))]
    for step in range(1, n + 1):
        t = times[step].expand(batch)
        order = step if step < UNIPC_ORDER else min(UNIPC_ORDER, n + 1 - step)
        x, model_t = solver.update(x, history, t, order, use_corrector=step < n)
        if callback is not None:
            callback(StepInfo(i=step - 1, sigma=0.0, sigma_hat=0.0, x=x, denoised=model_t))
        if model_t is not None:
            history = (history + [_Point(t, model_t)])[-UNIPC_ORDER:]
    return x


__all__ = ["DiscreteVPSchedule", "UNIPC_ORDER", "interpolate", "sample_unipc", "unipc_times"]
