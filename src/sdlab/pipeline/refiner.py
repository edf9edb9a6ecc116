"""The SDXL refiner switch as A1111 v1.10.1 does it (``sd_samplers_common.apply_refiner``).

Before every guided model call the completed ratio is computed from the current noise level: the model
timestep nearest to ``max(sigma)`` (``argmin |model sigmas - sigma|``; timestep samplers pass the
timestep itself) gives ``(999 - t) / 1000`` in float32. Once it is no longer below ``switch_at`` the
refiner's UNet and its own conditioning (the same prompt plan encoded by the refiner's text encoder,
time ids ``[h, w, top, left, aesthetic score]`` with 6.0 for the prompt and 2.5 for the negative) replace
the base model's for the rest of the run, the step counter continues, and the result is decoded by the
refiner's VAE. With hires fix the switch happens in the second pass only (A1111's default
``hires_fix_refiner_pass = "second pass"``). Infotext ``Refiner: name [hash]``, ``Refiner switch at``
are written only when the switch happened.

With ``RefinerSpec.by_sampling_steps`` (A1111's ``refiner_switch_by_sample_steps``) the ratio is instead
``calls / total`` with ``total`` the pass's launch steps (``steps``, or ``t_enc + 1`` for img2img and the
hires pass), doubled for second-order samplers, and ``Refiner switch by sampling steps: True`` is written
whether or not the switch happened, as A1111 does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sdlab.pipeline.sampling import PassSpec, Txt2ImgRun, inner_model, pass_steps, scheduled_conditioning
from sdlab.pipeline.unet import UNetCall
from sdlab.samplers.denoiser import GuidanceCore
from sdlab.samplers.registry import SamplerEntry
from sdlab.samplers.sigma_model import SigmaModel
from sdlab.types import GenerationRequest


def completed_ratio(sigma: Tensor, model_sigmas: Tensor | None) -> Tensor:
    """``(999 - t) / 1000`` (float32 tensor) for the timestep ``t`` nearest ``max(sigma)``; with
    ``model_sigmas`` None ``sigma`` already holds timesteps."""
    if model_sigmas is None:
        timestep = torch.max(sigma).to(dtype=torch.int64)
    else:
        timestep = torch.argmin(torch.abs(model_sigmas.to(sigma.device) - torch.max(sigma)))
    return (999 - timestep) / 1000


def launch_total(steps: int, t_enc: int, img2img: bool, second_order: bool) -> int:
    """A1111's ``total_steps`` of a pass: ``t_enc + 1`` (img2img, hires) or ``steps``, x2 if second order."""
    total = t_enc + 1 if img2img else steps
    return total * 2 if second_order else total


def should_switch(sigma: Tensor, model_sigmas: Tensor | None, switch_at: float) -> bool:
    """A1111's test: switch unless the completed ratio is still below ``switch_at`` (compared in float32)."""
    return not bool(completed_ratio(sigma, model_sigmas) < switch_at)


@dataclass
class RefinerSwitch:
    """A guided model that swaps its core's UNet and conditioning for the refiner's once
    :func:`should_switch` says so (``build`` makes ``(inner, cond_at, uncond_at)`` for the refiner)."""

    guided: Any
    core: GuidanceCore
    switch_at: float
    model_sigmas: Tensor | None
    build: Callable[[], tuple[Any, Any, Any]]
    total_calls: int | None = None
    switched: bool = False

    @property
    def step(self) -> int:
        """Guided model calls so far."""
        return self.core.step

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Any:
        if not self.switched and self._due(sigma):
            self.core.inner, self.core.cond_at, self.core.uncond_at = self.build()
            self.switched = True
        return self.guided(x, sigma, **kwargs)

    def _due(self, sigma: Tensor) -> bool:
        if self.total_calls is None:
            return should_switch(sigma, self.model_sigmas, self.switch_at)
        return not self.step / self.total_calls < self.switch_at


@dataclass
class RefinerHook:
    """Builds the :class:`RefinerSwitch` of one pass and remembers whether it switched."""

    refiner: Txt2ImgRun
    request: GenerationRequest
    spec: PassSpec
    batch: int
    switch_at: float
    switches: list[RefinerSwitch] = field(default_factory=list)

    @property
    def switched(self) -> bool:
        """True once the refiner has taken over in this pass."""
        return any(s.switched for s in self.switches)

    def wrap(self, core: GuidanceCore, guided: Any, entry: SamplerEntry, sigma_model: SigmaModel) -> Any:
        """The :data:`~sdlab.pipeline.sampling.GuidedWrapper` handed to ``sample_pass``."""
        run = self.refiner
        refiner_sigmas = SigmaModel.from_alphas_cumprod(run.model.alphas_cumprod)

        def build() -> tuple[Any, Any, Any]:
            cond = scheduled_conditioning(run, self.request, self.spec, self.batch)
            inner = inner_model(entry, run.model, UNetCall(run.model.unet, run.dtype), refiner_sigmas)
            return inner, cond.cond_at, cond.uncond_at

        model_sigmas = None if entry.kind == "timestep" else sigma_model.sigmas
        total = None
        if self.request.refiner is not None and self.request.refiner.by_sampling_steps:
            steps, t_enc = pass_steps(self.spec)
            total = launch_total(steps, t_enc, self.spec.denoising_strength is not None, entry.second_order)
        switch = RefinerSwitch(guided, core, self.switch_at, model_sigmas, build, total)
        self.switches.append(switch)
        return switch


def refiner_infotext(refiner: Txt2ImgRun, switch_at: float) -> dict[str, object]:
    """``Refiner: name [short hash]`` (A1111's short title) and ``Refiner switch at``."""
    hashes = refiner.model.hashes
    title = refiner.model_name if hashes is None else f"{refiner.model_name} [{hashes.short}]"
    return {"Refiner": title, "Refiner switch at": switch_at}


def switch_mode_infotext(request: GenerationRequest) -> dict[str, object]:
    """``Refiner switch by sampling steps: True`` when the request asks for that mode (switched or not)."""
    spec = request.refiner
    return {"Refiner switch by sampling steps": True} if spec is not None and spec.by_sampling_steps else {}
