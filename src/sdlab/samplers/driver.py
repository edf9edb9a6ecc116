"""Run one whole sampling the way A1111's ``processing.py`` drives its samplers (txt2img and img2img).

k-diffusion samplers (and LCM): txt2img starts at ``x = noise * sigmas[0]`` (``* sqrt(1 + sigmas[0]^2)`` with
the SGM noise multiplier); img2img truncates the schedule to ``sigma_sched = sigmas[steps - t_enc - 1:]`` and
starts at ``init + noise * sigma_sched[0]``. DPM fast / adaptive get a sigma range instead (the model's in
txt2img, ``sigma_sched[-2]`` .. ``sigma_sched[0]`` in img2img) and DPM fast an evaluation count. The SDE
samplers get a Brownian tree over the *full* schedule, one per image seed.
Timestep samplers: txt2img starts from the unit noise; img2img noises the init latent to ``T[t_enc]`` and
walks ``T[:t_enc]``.

No diffusers here: the caller supplies the guided model (``CFGDenoiser`` / ``CFGEpsModel`` from
:mod:`sdlab.samplers.denoiser`), the initial noise and the generator's ``next`` as a NoiseFn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from sdlab.errors import CancelledError, InvalidRequestError
from sdlab.samplers.brownian import BrownianTreeNoise, RandnLocal, schedule_range
from sdlab.samplers.registry import SamplerEntry
from sdlab.samplers.types import NoiseFn, StepCallback

CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class SamplingJob:
    """What to run.

    ``schedule``: the full sigmas (k-diffusion, LCM) or full int64 timesteps (timestep samplers) for ``steps``
    steps (A1111's step count after img2img stretching); ``model_sigma_range``: the model's (sigma_min,
    sigma_max) as floats (DPM fast / adaptive in txt2img); ``alphas_cumprod``: needed by timestep samplers;
    ``init_latent`` + ``t_enc`` (>= 1 denoising steps): img2img; ``seeds``: one per image (Brownian tree);
    ``options``: overrides of the entry's options (``eta``, ``s_churn``, ...; None values are ignored).
    """

    entry: SamplerEntry
    schedule: Tensor
    steps: int
    model_sigma_range: tuple[float, float] = (0.0, 0.0)
    alphas_cumprod: Tensor | None = None
    init_latent: Tensor | None = None
    t_enc: int = 0
    seeds: tuple[int, ...] = ()
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sgm_noise_multiplier: bool = False

    @property
    def is_img2img(self) -> bool:
        """True when an init latent is given."""
        return self.init_latent is not None


def sampler_options(job: SamplingJob) -> dict[str, Any]:
    """The entry's A1111 keyword defaults with the job's non-None overrides (unknown keys are rejected)."""
    merged = dict(job.entry.options)
    for key, value in job.options.items():
        if value is None:
            continue
        if key not in merged and not (key == "eta" and job.entry.eta_option):
            raise InvalidRequestError(
                f"option {key!r} does not apply to sampler {job.entry.name}; it takes: {', '.join(merged) or 'none'}"
            )
        merged[key] = value
    return merged


def sigma_schedule(job: SamplingJob) -> Tensor:
    """The sigmas actually walked: the full schedule, or ``schedule[steps - t_enc - 1:]`` for img2img."""
    if not job.is_img2img:
        return job.schedule
    start = job.steps - job.t_enc - 1
    if job.t_enc < 1 or not 0 <= start < len(job.schedule) - 1:
        raise InvalidRequestError(f"img2img t_enc {job.t_enc} does not fit {job.steps} steps")
    return job.schedule[start:]


def range_kwargs(job: SamplingJob, sigma_sched: Tensor) -> dict[str, Any]:
    """``sigma_min`` / ``sigma_max`` (+ ``n``) for DPM fast / adaptive, as A1111 picks them."""
    if job.is_img2img:
        kwargs: dict[str, Any] = {"sigma_min": sigma_sched[-2], "sigma_max": sigma_sched[0]}
        n = len(sigma_sched) - 1
    else:
        lo, hi = job.model_sigma_range
        if not 0 < lo < hi:
            raise InvalidRequestError(f"{job.entry.name} needs the model's sigma range (0 < min < max), got {lo}, {hi}")
        kwargs = {"sigma_min": lo, "sigma_max": hi}
        n = job.steps
    if job.entry.takes_n:
        kwargs["n"] = n
    return kwargs


def _cancellable(model: Callable[..., Any], cancel: CancelCheck | None) -> Callable[..., Any]:
    """The model, checking ``cancel()`` before every call (raises CancelledError)."""
    if cancel is None:
        return model

    def checked(*args: Any, **kwargs: Any) -> Any:
        if cancel():
            raise CancelledError("generation cancelled")
        return model(*args, **kwargs)

    return checked


def _run_sigma_sampler(job: SamplingJob, model: Any, noise: Tensor, next_noise: NoiseFn,
                       callback: StepCallback | None, randn_local: RandnLocal | None) -> Tensor:
    sigmas = sigma_schedule(job)
    if job.is_img2img:
        assert job.init_latent is not None
        x = job.init_latent + noise * sigmas[0]
    elif job.sgm_noise_multiplier:
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    else:
        x = noise * sigmas[0]
    kwargs = sampler_options(job)
    if job.entry.uses_brownian:
        seeds = job.seeds if job.seeds else ()
        kwargs["noise_sampler"] = BrownianTreeNoise(x, *schedule_range(job.schedule), seeds, randn_local=randn_local)
    fn = job.entry.function
    if job.entry.range_inputs:
        return fn(model, x, noise=next_noise, callback=callback, **range_kwargs(job, sigmas), **kwargs)
    return fn(model, x, sigmas, noise=next_noise, callback=callback, **kwargs)


def _run_timestep_sampler(job: SamplingJob, model: Any, noise: Tensor, next_noise: NoiseFn,
                          callback: StepCallback | None) -> Tensor:
    if job.alphas_cumprod is None:
        raise InvalidRequestError(f"{job.entry.name} needs the model's alphas_cumprod")
    ac = job.alphas_cumprod
    timesteps, x = job.schedule, noise
    kwargs = sampler_options(job)
    if job.is_img2img:
        assert job.init_latent is not None
        if not 1 <= job.t_enc < len(job.schedule):
            raise InvalidRequestError(f"img2img t_enc {job.t_enc} does not fit {len(job.schedule)} timesteps")
        t_noise = job.schedule[job.t_enc]
        x = job.init_latent * torch.sqrt(ac[t_noise]) + noise * torch.sqrt(1 - ac[t_noise])
        timesteps = job.schedule[: job.t_enc]
        if job.entry.img2img_flag:
            kwargs["is_img2img"] = True
    return job.entry.function(model, x, timesteps, ac, noise=next_noise, callback=callback, **kwargs)


def run_sampling(job: SamplingJob, model: Any, noise: Tensor, next_noise: NoiseFn, *,
                 callback: StepCallback | None = None, cancel: CancelCheck | None = None,
                 randn_local: RandnLocal | None = None) -> Tensor:
    """Sample one batch and return the final latent ``[B, C, H, W]``.

    ``model``: a guided Denoiser (k-diffusion, LCM) or EpsModel (timestep samplers); ``noise``: the initial
    unit noise (A1111's ``rng.next()`` / ``first()``); ``next_noise``: later draws; ``cancel``: polled before
    every model call; ``randn_local``: Brownian-tree draws for non-CPU RNG sources (see ``brownian``).
    """
    guarded = _cancellable(model, cancel)
    if job.entry.kind == "timestep":
        return _run_timestep_sampler(job, guarded, noise, next_noise, callback)
    return _run_sigma_sampler(job, guarded, noise, next_noise, callback, randn_local)
