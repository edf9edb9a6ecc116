"""The discrete noise schedule of a Stable Diffusion model, seen as sigmas (A1111 / k-diffusion view).

A :class:`SigmaModel` holds a model's ``alphas_cumprod`` (float32, one value per training timestep, 1000 for
every SD family) and the derived sigma table ``sqrt((1 - ac) / ac)`` (float32, ascending: index 0 is the
least noisy timestep). It converts between noise levels and fractional timesteps exactly as k-diffusion's
``DiscreteSchedule`` (``CompVisDenoiser``, quantize off) does. Epsilon and v-prediction models share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError

#: SD 1.x / 2.x / SDXL training schedule ("scaled linear"): beta from 0.00085 to 0.012 over 1000 steps.
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_NUM_TIMESTEPS = 1000


def scaled_linear_alphas_cumprod(
    beta_start: float = SD_BETA_START, beta_end: float = SD_BETA_END, num_timesteps: int = SD_NUM_TIMESTEPS
) -> Tensor:
    """``cumprod(1 - linspace(sqrt(beta_start), sqrt(beta_end), num_timesteps)^2)`` in float64, cast to float32."""
    if num_timesteps < 2:
        raise InvalidRequestError(f"num_timesteps must be >= 2, got {num_timesteps}")
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def _as_sigma_tensor(sigma: Tensor | float) -> Tensor:
    """A float becomes a 0-d float32 tensor (A1111's ``torch.tensor(sigma)``); tensors are cast to float32."""
    if isinstance(sigma, Tensor):
        return sigma.to(torch.float32)
    return torch.tensor(float(sigma), dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class SigmaModel:
    """A model's noise table. Build it with :meth:`from_alphas_cumprod` or :func:`sd_sigma_model`.

    ``alphas_cumprod``, ``sigmas`` and ``log_sigmas`` are 1-d float32 CPU tensors of equal length
    (>= 2); ``sigmas`` ascend from ``sigma_min`` (timestep 0) to ``sigma_max`` (last timestep).
    """

    alphas_cumprod: Tensor
    sigmas: Tensor = field(repr=False)
    log_sigmas: Tensor = field(repr=False)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor) -> SigmaModel:
        """Derive sigmas ``((1 - ac) / ac) ** 0.5`` in float32 from a 1-d alphas_cumprod table in (0, 1).

        The square root is taken in float64 and rounded once to float32 (the correctly rounded float32 sqrt),
        so the table is the same on every CPU; torch's own float32 sqrt differs by 1 ulp on some builds.
        """
        if not isinstance(alphas_cumprod, Tensor) or alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 2:
            raise InvalidRequestError("alphas_cumprod must be a 1-d tensor with at least 2 values")
        ac = alphas_cumprod.detach().to("cpu", torch.float32).clone()
        if not bool(((ac > 0) & (ac < 1)).all()):
            raise InvalidRequestError("alphas_cumprod values must lie strictly between 0 and 1")
        sigmas = ((1 - ac) / ac).double().sqrt().float()
        return cls(alphas_cumprod=ac, sigmas=sigmas, log_sigmas=sigmas.double().log().float())

    @property
    def num_timesteps(self) -> int:
        """Number of training timesteps (1000 for SD)."""
        return int(self.sigmas.shape[0])

    @property
    def sigma_min(self) -> float:
        """Smallest sigma as A1111 reads it: ``sigmas[0].item()`` (a float32 value as a Python float)."""
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        """Largest sigma as A1111 reads it: ``sigmas[-1].item()``."""
        return self.sigmas[-1].item()

    def sigma_to_t(self, sigma: Tensor | float) -> Tensor:
        """Fractional timestep(s) of ``sigma`` (k-diffusion log-sigma inverse interpolation), float32.

        ``low`` = last index with ``log_sigmas[low] <= log(sigma)`` (0 if none), at most ``len - 2``;
        ``w = (log_sigmas[low] - log sigma) / (log_sigmas[low] - log_sigmas[low + 1])`` clamped to [0, 1];
        ``t = (1 - w) * low + w * (low + 1)``. Output has the shape of ``sigma``; range [0, len - 1].
        """
        sigma = _as_sigma_tensor(sigma)
        log_sigma = sigma.log()
        at_or_below = log_sigma.reshape(1, -1) >= self.log_sigmas[:, None]
        index = torch.arange(self.num_timesteps)[:, None]
        low_idx = torch.where(at_or_below, index, 0).amax(dim=0).clamp(max=self.num_timesteps - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: Tensor | float) -> Tensor:
        """Sigma(s) at fractional timestep(s) ``t`` in [0, len - 1]: log-linear between neighbouring entries."""
        t = _as_sigma_tensor(t)
        if bool(((t < 0) | (t > self.num_timesteps - 1)).any()):
            raise InvalidRequestError(f"timesteps must lie in [0, {self.num_timesteps - 1}]")
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()

    def uniform_sigmas(self, n: int) -> Tensor:
        """k-diffusion ``get_sigmas(n)``: sigma at ``t = linspace(len - 1, 0, n)``, then a final 0 (n + 1 values)."""
        t = torch.linspace(self.num_timesteps - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])


def sd_sigma_model() -> SigmaModel:
    """The SD 1.x / 2.x / SDXL schedule (scaled linear, 1000 steps): sigma_min 0.0291675, sigma_max 14.6146."""
    return SigmaModel.from_alphas_cumprod(scaled_linear_alphas_cumprod())
