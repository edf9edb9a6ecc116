"""LCM (latent consistency model) sampling as A1111 v1.10.1 runs it ("LCM" sampler, ``LCMCompVisDenoiser``).

The denoiser sees only the 50 "valid" LCM timesteps ``t_j = 20*j + 19``: ``ac50[49 - k] = ac[999 - 20k]``,
``sigma50 = sqrt((1 - ac50) / ac50)`` (float32). A noise level ``sigma`` is snapped to the nearest entry in
log space; the UNet gets that integer timestep (int64), and the consistency-model boundary condition
``denoised = c_out * x0 + c_skip * x`` with ``s = 10 t``, ``c_skip = 0.25 / (s^2 + 0.25)``,
``c_out = s / sqrt(s^2 + 0.25)`` is applied to ``x0 = x - sigma * eps(x / sqrt(sigma^2 + 1), t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.schedules import SCHEDULES, get_sigmas
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.samplers.timesteps import sqrt_f32
from sdlab.samplers.types import Denoiser, NoiseFn, StepCallback, StepInfo

#: LCM's original (distillation) step count and the resulting timestep stride over 1000 training steps.
LCM_ORIGINAL_STEPS = 50
#: sigma_data of the consistency boundary condition; timesteps are scaled by 10 inside it.
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0

#: ``unet(x_in, t, cond) -> eps``: x_in the c_in-scaled latent batch, t int64 timesteps [B].
UNetFn = Callable[[Tensor, Tensor, Any], Tensor]


@dataclass(frozen=True, eq=False)
class LCMTable:
    """The 50-entry LCM noise table derived from a 1000-entry float32 ``alphas_cumprod``."""

    alphas_cumprod: Tensor
    sigmas: Tensor = field(repr=False)
    log_sigmas: Tensor = field(repr=False)
    skip: int

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, original_steps: int = LCM_ORIGINAL_STEPS) -> LCMTable:
        """Pick ``ac[N - 1 - k*skip]`` (k = 0..original_steps-1, stored ascending in timestep), N = len(ac)."""
        n = alphas_cumprod.shape[0]
        if alphas_cumprod.ndim != 1 or n % original_steps:
            raise InvalidRequestError(f"alphas_cumprod length {n} is not a multiple of {original_steps}")
        skip = n // original_steps
        ac = alphas_cumprod.to(torch.float32)[skip - 1 :: skip].clone()
        sigmas = sqrt_f32((1 - ac) / ac)
        return cls(alphas_cumprod=ac, sigmas=sigmas, log_sigmas=sigmas.log(), skip=skip)

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Integer timestep (int64, one of 19, 39, ..., 999) of the entry nearest to ``sigma`` in log space."""
        dists = (sigma.log() - self.log_sigmas[:, None]).abs()
        return dists.argmin(dim=0).view(sigma.shape) * self.skip + (self.skip - 1)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma at (fractional) timesteps ``t``: log-linear over the table at ``clamp((t - 19)/20, 0, 49)``."""
        pos = torch.clamp(((t - (self.skip - 1)) / self.skip).float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = pos.floor().long(), pos.ceil().long(), pos.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def automatic_sigmas(self, n: int) -> Tensor:
        """LCM's own schedule: ``t = linspace(999, 19, n)`` mapped through :meth:`t_to_sigma`, then a 0."""
        start = self.sigma_to_t(self.sigmas[-1])
        end = self.sigma_to_t(self.sigmas[0])
        t = torch.linspace(start, end, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])


@dataclass(frozen=True, eq=False)
class LCMDenoiser:
    """``denoiser(x, sigma, cond) -> denoised`` for an eps UNet under LCM's timestep snapping and scalings."""

    unet: UNetFn
    table: LCMTable

    @classmethod
    def from_alphas_cumprod(cls, unet: UNetFn, alphas_cumprod: Tensor) -> LCMDenoiser:
        return cls(unet, LCMTable.from_alphas_cumprod(alphas_cumprod))

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / sqrt_f32(s**2 + 1.0)
        t = self.table.sigma_to_t(sigma)
        x0 = x + self.unet(x * c_in, t, cond) * -s
        scaled_t = t.reshape(s.shape) * LCM_TIMESTEP_SCALING
        c_skip = LCM_SIGMA_DATA**2 / (scaled_t**2 + LCM_SIGMA_DATA**2)
        c_out = scaled_t / sqrt_f32(scaled_t**2 + LCM_SIGMA_DATA**2)
        return c_out * x0 + c_skip * x


#: Schedule types that A1111 answers with the denoiser's own ``get_sigmas`` (for LCM: its 50-entry table).
_OWN_SCHEDULES = ("Automatic", "Uniform")


def lcm_sigmas(schedule: str, steps: int, alphas_cumprod: Tensor) -> Tensor:
    """Sigmas for the LCM sampler: "Automatic"/"Uniform" = the LCM table's own schedule; schedules that need
    only a range (Karras, Exponential, ...) use the LCM table's ends (0.1344506 .. 14.614643 for SD).

    Schedules that read the model's sigma table (SGM Uniform, Simple, ...) are rejected: A1111 would evaluate
    them over the snapped LCM table, which sdlab does not reproduce.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidRequestError(f"steps must be an integer >= 1, got {steps!r}")
    table = LCMTable.from_alphas_cumprod(alphas_cumprod)
    entry = SCHEDULES.get(schedule)
    if entry.label in _OWN_SCHEDULES:
        return table.automatic_sigmas(steps)
    if entry.uses_model_sigmas:
        raise InvalidRequestError(
            f"schedule type {entry.label!r} is not supported with LCM; use Automatic, Karras or Exponential"
        )
    model = SigmaModel.from_alphas_cumprod(table.alphas_cumprod)
    return get_sigmas(entry.label, steps, model, sigma_min=table.sigma_min, sigma_max=table.sigma_max)


def sample_lcm(
    model: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseFn, callback: StepCallback | None = None
) -> Tensor:
    """A1111 ``sample_lcm``: ``x <- denoised(x, sigma_i) + sigma_{i+1} * noise`` (no noise when it is 0).

    ``x`` is the start latent already scaled to ``sigmas[0]``; callbacks come at the start of each step.
    """
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if callback is not None:
            sigma = sigmas[i].item()
            callback(StepInfo(i=i, sigma=sigma, sigma_hat=sigma, x=x, denoised=denoised))
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise()
    return x


__all__ = ["LCMDenoiser", "LCMTable", "UNetFn", "lcm_sigmas", "sample_lcm"]
