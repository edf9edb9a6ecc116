"""Model wrappers between a UNet callable and the samplers, as A1111 v1.10.1 / k-diffusion build them.

* :class:`CompVisDenoiser` / :class:`CompVisVDenoiser`: k-diffusion's ``external`` wrappers (quantize off).
  They turn ``unet(x_in, t, cond) -> eps | v`` into ``denoiser(x, sigma, cond) -> x0`` with fractional
  float32 timesteps ``t = sigma_to_t(sigma)``.
* :class:`TimestepEpsDenoiser` / :class:`TimestepVDenoiser`: the timestep view (eps out, integer-valued t).
* :class:`CFGDenoiser` (a :class:`~sdlab.samplers.types.Denoiser`) and :class:`CFGEpsModel` (an
  :class:`~sdlab.samplers.types.EpsModel`): A1111's ``CFGDenoiser`` batching and AND-composition,
  ``D = D_u + sum_i (D_ci - D_u) * (w_i * cfg)``, with a step counter feeding scheduled conditioning.
* :func:`img2img_sigmas`, :func:`img2img_timesteps`: A1111's img2img truncation of a schedule.

This module knows nothing of prompts: conditioning is whatever ``cond_at(step)`` returns (a
:class:`~sdlab.samplers.types.MultiCond`, or a bare tensor / object meaning one row per image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.types import EpsOut, MultiCond

#: ``unet(x_in, t, cond) -> eps or v`` with ``x_in`` ``[N, C, H, W]``, ``t`` ``[N]`` and any conditioning.
UNetFn = Callable[[Tensor, Tensor, Any], Tensor]
#: ``inner(x, sigma_or_t, cond) -> output`` (x0 for sigma wrappers, eps for timestep wrappers).
InnerFn = Callable[[Tensor, Tensor, Any], Tensor]
#: Joins cond and uncond conditioning into one batch, or returns None when they cannot be batched.
JoinFn = Callable[[Any, Any], Any]


class SigmaToT(Protocol):
    """Anything converting noise levels to fractional timesteps (``SigmaModel``, ``LCM`` tables)."""

    def sigma_to_t(self, sigma: Tensor) -> Tensor: ...


def _dims(v: Tensor, ndim: int) -> Tensor:
    """k-diffusion ``append_dims``: trailing singleton dims up to ``ndim``."""
    return v[(...,) + (None,) * (ndim - v.ndim)]


@dataclass(frozen=True)
class CompVisDenoiser:
    """Epsilon model -> denoiser: ``x + eps(x * c_in, t(sigma)) * c_out``, ``c_in = 1/sqrt(sigma^2+1)``, ``c_out = -sigma``."""

    unet: UNetFn
    schedule: SigmaToT

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        c_out = _dims(-sigma, x.ndim)
        c_in = _dims(1 / (sigma**2 + 1.0) ** 0.5, x.ndim)
        eps = self.unet(x * c_in, self.schedule.sigma_to_t(sigma), cond)
        return x + eps * c_out


@dataclass(frozen=True)
class CompVisVDenoiser:
    """v-prediction model -> denoiser: ``v(x * c_in, t) * c_out + x * c_skip``.

    ``c_skip = 1/(sigma^2+1)``, ``c_out = -sigma/sqrt(sigma^2+1)``, ``c_in = 1/sqrt(sigma^2+1)`` (sigma_data 1).
    """

    unet: UNetFn
    schedule: SigmaToT

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        c_skip = _dims(1.0 / (sigma**2 + 1.0), x.ndim)
        c_out = _dims(-sigma * 1.0 / (sigma**2 + 1.0) ** 0.5, x.ndim)
        c_in = _dims(1 / (sigma**2 + 1.0) ** 0.5, x.ndim)
        return self.unet(x * c_in, self.schedule.sigma_to_t(sigma), cond) * c_out + x * c_skip


@dataclass(frozen=True)
class TimestepEpsDenoiser:
    """Timestep view of an epsilon model: ``eps = unet(x, t, cond)`` (x unscaled, t float32 integer-valued)."""

    unet: UNetFn

    def __call__(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        return self.unet(x, t, cond)


@dataclass(frozen=True)
class TimestepVDenoiser:
    """Timestep view of a v model: ``eps = sqrt(ac[t]) * v + sqrt(1 - ac[t]) * x`` (A1111's CompVisTimestepsVDenoiser)."""

    unet: UNetFn
    alphas_cumprod: Tensor

    def __call__(self, x: Tensor, t: Tensor, cond: Any) -> Tensor:
        v = self.unet(x, t, cond)
        idx = t.to(torch.int)
        ac = self.alphas_cumprod.to(x.device)
        return _dims(torch.sqrt(ac)[idx], x.ndim) * v + _dims(torch.sqrt(1 - ac)[idx], x.ndim) * x


def join_conds(cond: Any, uncond: Any) -> Any:
    """Default :data:`JoinFn`: ``torch.cat`` along the batch when token counts match, else None.

    Dicts of tensors (SDXL ``crossattn`` / ``vector``) are joined key by key.
    """
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        return torch.cat([cond, uncond]) if cond.shape[1:] == uncond.shape[1:] else None
    if isinstance(cond, dict) and isinstance(uncond, dict) and cond.keys() == uncond.keys():
        parts = {k: join_conds(cond[k], uncond[k]) for k in cond}
        return None if any(v is None for v in parts.values()) else parts
    return None


def _as_multicond(cond: Any, batch_size: int) -> MultiCond:
    return cond if isinstance(cond, MultiCond) else MultiCond.single(cond, batch_size)


def _batched_inputs(x: Tensor, sigma: Tensor, multi: MultiCond) -> tuple[Tensor, Tensor]:
    """``x_in = [x_0 (per cond of image 0)..., x_1..., x]`` and the matching ``sigma_in``."""
    if len(multi.conds_list) != x.shape[0]:
        raise InvalidRequestError(
            f"conditioning describes {len(multi.conds_list)} images but the latent batch has {x.shape[0]}"
        )
    repeats = torch.tensor([len(c) for c in multi.conds_list], device=x.device)
    x_in = torch.cat([x.repeat_interleave(repeats, dim=0), x])
    sigma_in = torch.cat([sigma.repeat_interleave(repeats, dim=0), sigma])
    return x_in, sigma_in


def combine_guidance(out: Tensor, conds_list: tuple[tuple[tuple[int, float], ...], ...], scale: float) -> Tensor:
    """A1111 ``combine_denoised``: clone the uncond rows, then ``+= (out[row] - uncond) * (weight * scale)``."""
    batch = len(conds_list)
    uncond = out[-batch:]
    guided = torch.clone(uncond)
    for i, conds in enumerate(conds_list):
        for row, weight in conds:
            guided[i] += (out[row] - uncond[i]) * (weight * scale)
    return guided


@dataclass
class GuidanceCore:
    """Shared CFG machinery: one inner call on ``[conds..., unconds...]``; counts calls in ``step``.

    ``cond_at(step)`` / ``uncond_at(step)`` give the conditioning for the current call (A1111's
    ``reconstruct_*_cond_batch`` at ``self.step``); ``join`` batches them (None -> two inner calls).
    """

    inner: InnerFn
    cond_at: Callable[[int], Any]
    uncond_at: Callable[[int], Any]
    cfg_scale: float
    join: JoinFn = join_conds
    step: int = field(default=0)
    image_cfg_scale: float | None = None

    def run(self, x: Tensor, sigma: Tensor, scale_factor: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(guided, uncond_output)`` for latent ``x`` ``[B, C, H, W]`` at ``sigma`` ``[B]``."""
        if self.image_cfg_scale is not None:
            return self._run_edit(x, sigma, scale_factor)
        multi = _as_multicond(self.cond_at(self.step), x.shape[0])
        uncond = self.uncond_at(self.step)
        x_in, sigma_in = _batched_inputs(x, sigma, multi)
        joined = self.join(multi.tensor, uncond)
        if joined is not None:
            out = self.inner(x_in, sigma_in, joined)
        else:
            rows = multi.rows
            out = torch.cat([self.inner(x_in[:rows], sigma_in[:rows], multi.tensor),
                             self.inner(x_in[rows:], sigma_in[rows:], uncond)])
        guided = combine_guidance(out, multi.conds_list, self.cfg_scale * scale_factor)
        self.step += 1
        return guided, out[-x.shape[0]:]

    def _run_edit(self, x: Tensor, sigma: Tensor, scale_factor: float) -> tuple[Tensor, Tensor]:
        """instruct-pix2pix with an image CFG scale (A1111 ``combine_denoised_for_edit_model``): three
        passes, text + image, image only, neither, combined as
        ``uncond + cfg * (cond - image) + image_cfg * (image - uncond)``."""
        multi = _as_multicond(self.cond_at(self.step), x.shape[0])
        if any(len(conds) != 1 for conds in multi.conds_list):
            raise InvalidRequestError("AND is not supported for instruct-pix2pix models with an image CFG "
                                      "scale other than 1; use one prompt or image_cfg_scale 1")
        uncond = self.uncond_at(self.step)
        rows = x.shape[0]
        parts = [_with_image_scale(c, rows, v) for c, v in ((multi.tensor, 1.0), (uncond, 1.0), (uncond, 0.0))]
        pair = self.join(parts[0], parts[1])
        joined = None if pair is None else self.join(pair, parts[2])
        x_in, sigma_in = torch.cat([x, x, x]), torch.cat([sigma, sigma, sigma])
        if joined is not None:
            out = self.inner(x_in, sigma_in, joined)
        else:
            out = torch.cat([self.inner(x, sigma, part) for part in parts])
        cond, image, plain = out.chunk(3)
        assert self.image_cfg_scale is not None
        guided = plain + self.cfg_scale * scale_factor * (cond - image) + self.image_cfg_scale * (image - plain)
        self.step += 1
        return guided, plain


def _with_image_scale(cond: Any, rows: int, value: float) -> dict[str, Any]:
    """``cond`` (a dict of tensors) with an ``image_scale`` entry: ``value`` for each of its ``rows``."""
    if not isinstance(cond, dict):
        raise TypeError("instruct-pix2pix guidance needs dict conditioning (context, ...)")
    first = next(iter(cond.values()))
    return {**cond, "image_scale": torch.full((rows,), value, device=first.device)}


@dataclass
class CFGDenoiser:
    """Guided :class:`~sdlab.samplers.types.Denoiser` for k-diffusion samplers (``inner`` is a sigma wrapper).

    Inpainting (A1111's mask blend): with ``init_latent`` and ``mask`` (1 = keep the original, broadcastable
    to the latent) the output is ``init_latent * mask + (1 - mask) * denoised``.
    """

    core: GuidanceCore
    init_latent: Tensor | None = None
    mask: Tensor | None = None

    @property
    def step(self) -> int:
        """Number of guided model calls made so far (the prompt-schedule step)."""
        return self.core.step

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        denoised = self.core.run(x, sigma)[0]
        if self.mask is None or self.init_latent is None:
            return denoised
        return self.init_latent * self.mask + (1 - self.mask) * denoised


@dataclass
class CFGEpsModel:
    """Guided :class:`~sdlab.samplers.types.EpsModel` for timestep samplers (``inner`` is a timestep wrapper).

    ``cfg_scale_factor`` multiplies the CFG scale (DDIM CFG++ uses 1/12.5); ``uncond`` is the raw uncond eps.
    """

    core: GuidanceCore

    @property
    def step(self) -> int:
        """Number of guided model calls made so far."""
        return self.core.step

    def __call__(self, x: Tensor, t: Tensor, *, cfg_scale_factor: float = 1.0) -> EpsOut:
        guided, uncond = self.core.run(x, t, cfg_scale_factor)
        return EpsOut(guided=guided, uncond=uncond)


def img2img_steps(steps: int, denoising_strength: float, fix_steps: bool = False) -> tuple[int, int]:
    """A1111 ``setup_img2img_steps``: ``(total_steps, t_enc)`` for strength in [0, 1].

    Default ``t_enc = int(min(strength, 0.999) * steps)``; with ``fix_steps`` the schedule is stretched to
    ``int(steps / min(strength, 0.999))`` steps (0 at strength 0) and ``t_enc = steps - 1``.
    """
    if steps < 1:
        raise InvalidRequestError(f"steps must be >= 1, got {steps}")
    if not 0.0 <= denoising_strength <= 1.0:
        raise InvalidRequestError(f"denoising strength must be in [0, 1], got {denoising_strength}")
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        return (int(steps / strength) if denoising_strength > 0 else 0), steps - 1
    return steps, int(strength * steps)


def img2img_sigmas(sigmas_full: Tensor, steps: int, denoising_strength: float, fix_steps: bool = False) -> Tensor:
    """The k-diffusion img2img schedule ``sigmas_full[total - t_enc - 1:]``.

    ``sigmas_full`` must be the schedule for ``img2img_steps(steps, strength, fix_steps)[0]`` steps (with
    ``fix_steps`` off that is ``steps``). The result starts at the noise level the init latent is noised to.
    """
    total, t_enc = img2img_steps(steps, denoising_strength, fix_steps)
    start = total - t_enc - 1
    if not 0 <= start < len(sigmas_full) - 1:
        raise InvalidRequestError(
            f"img2img needs the sigmas for {total} steps; got {len(sigmas_full)} values (strength {denoising_strength})"
        )
    return sigmas_full[start:]


def img2img_timesteps(
    timesteps_full: Tensor, steps: int, denoising_strength: float, fix_steps: bool = False
) -> tuple[Tensor, int]:
    """Timestep samplers' img2img: ``(timesteps_full[:t_enc], timesteps_full[t_enc])``.

    The second value is the timestep the init latent is noised to: ``x = init*sqrt(ac[T]) + noise*sqrt(1-ac[T])``.
    ``timesteps_full`` is the grid for ``img2img_steps(...)[0]`` steps.
    """
    _, t_enc = img2img_steps(steps, denoising_strength, fix_steps)
    if not 0 <= t_enc < len(timesteps_full):
        raise InvalidRequestError(f"img2img t_enc {t_enc} is outside the {len(timesteps_full)} timesteps")
    return timesteps_full[:t_enc], int(timesteps_full[t_enc])
