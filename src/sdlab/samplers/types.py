"""Shared protocols and value types of the sampler layer (no torch modules, no diffusers).

Two model views exist, as in A1111:

* k-diffusion samplers see a :class:`Denoiser`: ``model(x, sigma) -> denoised`` (guided x0 estimate),
  with ``x`` the noisy latent at noise level ``sigma`` (``x = x0 + sigma * eps``).
* timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) see an :class:`EpsModel`:
  ``model(x, t, cfg_scale_factor=1.0) -> EpsOut`` with integer-valued timesteps ``t`` in [0, 999].

Noise for ancestral / SDE steps comes from a :data:`NoiseFn` (A1111's ``ImageRNG.next``), never from a
global RNG. Progress is reported through a :data:`StepCallback` receiving a :class:`StepInfo`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

#: Returns fresh standard-normal noise shaped like the latent batch ``[B, C, H, W]`` (one draw per call).
NoiseFn = Callable[[], Tensor]


class Denoiser(Protocol):
    """k-diffusion model view: ``denoised = model(x, sigma)``; ``sigma`` has shape ``[B]`` (float32)."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class EpsOut:
    """Output of an :class:`EpsModel` call: guided and unconditional noise predictions, ``[B, C, H, W]``."""

    guided: Tensor
    uncond: Tensor


class EpsModel(Protocol):
    """Timestep model view: guided eps at timestep ``t`` (shape ``[B]``), CFG scale multiplied by ``cfg_scale_factor``."""

    def __call__(self, x: Tensor, t: Tensor, *, cfg_scale_factor: float = 1.0) -> EpsOut: ...


@dataclass(frozen=True)
class StepInfo:
    """What a sampler reports at a step (A1111's callback payload).

    ``i``: step index (0-based, sampler-specific meaning, see the conformance README); ``sigma`` /
    ``sigma_hat``: noise levels (timestep samplers report the timestep); ``x``: the latent at that point;
    ``denoised``: the x0 estimate when the sampler has one; ``extra``: sampler-specific stats.
    """

    i: int
    sigma: float
    sigma_hat: float
    x: Tensor
    denoised: Tensor | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


StepCallback = Callable[[StepInfo], None]

#: Noise for the step from ``sigma`` to ``sigma_next`` (0-d tensors), shaped like the latent batch: the
#: Brownian-tree samplers (DPM++ SDE family) query noise by interval instead of drawing the next sample.
IntervalNoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MultiCond:
    """Conditioning of a batch with AND-composition (A1111's ``reconstruct_multicond_batch`` result).

    ``tensor``: the conditioning rows in image order (a tensor, or any object the UNet callable accepts);
    ``conds_list[b]``: ``(row, weight)`` pairs of the rows composing image ``b`` (weight 1.0 without AND).
    """

    conds_list: tuple[tuple[tuple[int, float], ...], ...]
    tensor: Any

    @classmethod
    def single(cls, tensor: Any, batch_size: int) -> MultiCond:
        """One row per image, weight 1.0 (a prompt without AND)."""
        return cls(tuple(((b, 1.0),) for b in range(batch_size)), tensor)

    @property
    def rows(self) -> int:
        """Number of conditioning rows (UNet batch entries) the conds use."""
        return sum(len(conds) for conds in self.conds_list)
