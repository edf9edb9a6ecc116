"""The A1111 v1.10.1 sampler table: 20 samplers, their aliases, defaults and schedules.

:data:`SAMPLERS` maps A1111's names ("DPM++ 2M") and aliases ("k_dpmpp_2m") to frozen :class:`SamplerEntry`
values. :func:`resolve_sampler` also accepts the pre-1.9 names carrying a schedule suffix ("DPM++ 2M Karras").
:func:`sampler_sigmas` is A1111's ``KDiffusionSampler.get_sigmas``; :func:`sampler_timesteps` the timestep
samplers' grid. Sampler functions are referenced by ``"module:attribute"`` and imported on first use, so the
table loads even while a sampler module is missing; using such an entry raises a clear :class:`SdlabError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError, SdlabError
from sdlab.registry import Registry
from sdlab.samplers.sigma_model import SigmaModel

Kind = Literal["kdiffusion", "timestep", "lcm"]

Options = tuple[tuple[str, Any], ...]

_CHURN: Options = (("s_churn", 0.0), ("s_tmin", 0.0), ("s_tmax", float("inf")), ("s_noise", 1.0))
_ANCESTRAL: Options = (("s_noise", 1.0), ("eta", 1.0))
_ETA_ONLY: Options = (("eta", 1.0),)


@dataclass(frozen=True)
class SamplerEntry:
    """One A1111 sampler.

    ``function_ref``: ``"module:attribute"`` of the sampler function (see :attr:`function`);
    ``default_scheduler``: schedule label used for "Automatic" (None: the model's uniform-t schedule);
    ``discard_penultimate_sigma``: compute steps+1 sigmas and drop the next-to-last one;
    ``second_order``: two model calls per step, so prompt schedules span ``2 * steps``;
    ``uses_brownian``: takes a Brownian-tree ``noise_sampler`` seeded by the image seeds;
    ``uses_ensd``: A1111 marks it as consuming the eta-noise-seed-delta generator;
    ``options``: ``(name, value)`` pairs of A1111's keyword arguments (``eta`` 1.0 = opts.eta_ancestral, ``eta`` 0.0 = opts.eta_ddim,
    churn parameters, ``solver_type``); ``eta_option``: "ancestral" / "ddim" / None, which A1111 option
    supplies ``eta``; ``range_inputs``: takes ``sigma_min`` / ``sigma_max`` instead of sigmas (DPM fast /
    adaptive); ``takes_n``: also takes a model-evaluation count ``n`` (DPM fast); ``img2img_flag``: takes
    ``is_img2img`` (UniPC).
    """

    name: str
    kind: Kind
    function_ref: str
    aliases: tuple[str, ...] = ()
    default_scheduler: str | None = None
    discard_penultimate_sigma: bool = False
    second_order: bool = False
    uses_brownian: bool = False
    uses_ensd: bool = False
    options: Options = ()
    eta_option: Literal["ancestral", "ddim"] | None = None
    range_inputs: bool = False
    takes_n: bool = False
    img2img_flag: bool = False

    @property
    def function(self) -> Callable[..., Tensor]:
        """The sampler function, imported now; raises SdlabError naming the missing module or attribute."""
        module_name, _, attr = self.function_ref.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise SdlabError(
                f"sampler {self.name!r} is not available in this build: {module_name}.{attr} is missing ({exc})"
            ) from exc

    def prompt_schedule_steps(self, steps: int) -> int:
        """Steps a prompt schedule ([a:b:when]) spans: ``2 * steps`` for second-order samplers."""
        return steps * 2 if self.second_order else steps


_K = "sdlab.samplers.kdiff:"
_KD = "sdlab.samplers.kdiff_dpm:"
_T = "sdlab.samplers.timesteps:"

_ENTRIES: tuple[SamplerEntry, ...] = (
    SamplerEntry("DPM++ 2M", "kdiffusion", _K + "sample_dpmpp_2m", ("k_dpmpp_2m",), "Karras"),
    SamplerEntry("DPM++ SDE", "kdiffusion", _K + "sample_dpmpp_sde", ("k_dpmpp_sde",), "Karras",
                 second_order=True, uses_brownian=True, options=_ANCESTRAL, eta_option="ancestral"),
    SamplerEntry("DPM++ 2M SDE", "kdiffusion", _K + "sample_dpmpp_2m_sde", ("k_dpmpp_2m_sde",), "Exponential",
                 uses_brownian=True, options=_ANCESTRAL, eta_option="ancestral"),
    SamplerEntry("DPM++ 2M SDE Heun", "kdiffusion", _K + "sample_dpmpp_2m_sde", ("k_dpmpp_2m_sde_heun",),
                 "Exponential", uses_brownian=True, eta_option="ancestral",
                 options=(*_ANCESTRAL, ("solver_type", "heun"))),
    SamplerEntry("DPM++ 2S a", "kdiffusion", _K + "sample_dpmpp_2s_ancestral", ("k_dpmpp_2s_a",), "Karras",
                 second_order=True, uses_ensd=True, options=_ANCESTRAL, eta_option="ancestral"),
    SamplerEntry("DPM++ 3M SDE", "kdiffusion", _K + "sample_dpmpp_3m_sde", ("k_dpmpp_3m_sde",), "Exponential",
                 discard_penultimate_sigma=True, uses_brownian=True, options=_ANCESTRAL, eta_option="ancestral"),
    SamplerEntry("Euler a", "kdiffusion", _K + "sample_euler_ancestral", ("k_euler_a", "k_euler_ancestral"),
                 uses_ensd=True, options=_ETA_ONLY, eta_option="ancestral"),
    SamplerEntry("Euler", "kdiffusion", _K + "sample_euler", ("k_euler",), options=_CHURN),
    SamplerEntry("LMS", "kdiffusion", _K + "sample_lms", ("k_lms",)),
    SamplerEntry("Heun", "kdiffusion", _K + "sample_heun", ("k_heun",), second_order=True, options=_CHURN),
    SamplerEntry("DPM2", "kdiffusion", _K + "sample_dpm_2", ("k_dpm_2",), "Karras",
                 discard_penultimate_sigma=True, second_order=True, options=_CHURN),
    SamplerEntry("DPM2 a", "kdiffusion", _K + "sample_dpm_2_ancestral", ("k_dpm_2_a",), "Karras",
                 discard_penultimate_sigma=True, second_order=True, uses_ensd=True, options=_ANCESTRAL,
                 eta_option="ancestral"),
    SamplerEntry("DPM fast", "kdiffusion", _KD + "sample_dpm_fast", ("k_dpm_fast",), uses_ensd=True,
                 options=_ANCESTRAL, eta_option="ancestral", range_inputs=True, takes_n=True),
    SamplerEntry("DPM adaptive", "kdiffusion", _KD + "sample_dpm_adaptive", ("k_dpm_ad",), uses_ensd=True,
                 options=_ETA_ONLY, eta_option="ancestral", range_inputs=True),
    SamplerEntry("Restart", "kdiffusion", "sdlab.samplers.restart:sample_restart", (), "Karras",
                 second_order=True),
    SamplerEntry("DDIM", "timestep", _T + "sample_ddim", options=(("eta", 0.0),), eta_option="ddim"),
    SamplerEntry("DDIM CFG++", "timestep", _T + "sample_ddim_cfgpp", ("ddim_cfgpp",),
                 options=(("eta", 0.0),), eta_option="ddim"),
    SamplerEntry("PLMS", "timestep", _T + "sample_plms"),
    SamplerEntry("UniPC", "timestep", "sdlab.samplers.unipc:sample_unipc", img2img_flag=True),
    SamplerEntry("LCM", "lcm", "sdlab.samplers.lcm:sample_lcm", ("k_lcm",)),
)

#: All v1.10.1 samplers by name; A1111's aliases (k_euler_a, k_dpmpp_2m, ...) resolve too, case-insensitively.
SAMPLERS: Registry[SamplerEntry] = Registry.of(
    "sampler", ((e.name, e) for e in _ENTRIES), ((a, e.name) for e in _ENTRIES for a in e.aliases)
)


def _schedules() -> Any:
    from sdlab.samplers import schedules  # noqa: PLC0415 - same layer; imported late to keep this table light

    return schedules


def _schedule_suffixes() -> list[tuple[str, str]]:
    """(name option, label) for every schedule label and alias, in A1111's scheduler order."""
    reg = _schedules().SCHEDULES
    options = [(label, label) for label in reg.names()]
    options += [(alias, reg.canonical(alias)) for alias, _ in reg.aliases]
    return options


def resolve_sampler(name: str, schedule_type: str = "Automatic", *,
                    convert_automatic: bool = True) -> tuple[SamplerEntry, str]:
    """``(entry, schedule label)`` for a sampler name, as A1111's ``get_sampler_and_scheduler``.

    A schedule suffix in the name ("DPM++ 2M Karras", "Euler a Exponential") overrides ``schedule_type``; with
    ``convert_automatic`` a schedule equal to the sampler's default becomes "Automatic". Unknown sampler or
    schedule names raise InvalidRequestError listing the valid ones (A1111 would silently fall back).
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError(f"sampler name must be a non-empty string; valid samplers: {', '.join(SAMPLERS.names())}")
    schedules = _schedules().SCHEDULES
    label = schedules.canonical(schedule_type or "Automatic")
    base = " ".join(name.split())
    if base not in SAMPLERS:
        for option, option_label in _schedule_suffixes():
            if base.lower().endswith(" " + option.lower()):
                base, label = base[: -(len(option) + 1)], option_label
    entry = SAMPLERS.get(base)
    if convert_automatic and entry.default_scheduler == label:
        label = "Automatic"
    return entry, label


def effective_schedule(entry: SamplerEntry, schedule_type: str) -> str:
    """The schedule label actually used: "Automatic" becomes the entry's default scheduler (if any)."""
    label = _schedules().SCHEDULES.canonical(schedule_type or "Automatic")
    if label == "Automatic" and entry.default_scheduler is not None:
        return entry.default_scheduler
    return label


def schedule_infotext(entry: SamplerEntry, schedule_type: str) -> dict[str, str]:
    """A1111's ``extra_generation_params`` from get_sigmas: ``{"Schedule type": label}`` unless Automatic/timestep."""
    if entry.kind == "timestep":
        return {}
    label = effective_schedule(entry, schedule_type)
    return {} if label == "Automatic" else {"Schedule type": label}


def schedule_sigmas(entry: SamplerEntry, schedule_type: str, steps: int, model: SigmaModel, *,
                    sigma_min: float | None = None, sigma_max: float | None = None, rho: float | None = None,
                    family: str = "sd1") -> Tensor:
    """A1111 ``KDiffusionSampler.get_sigmas`` for an entry (float32, CPU); overrides as in ``get_sigmas``."""
    if entry.kind == "timestep":
        raise InvalidRequestError(f"{entry.name} walks integer timesteps, not sigmas; use sampler_timesteps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidRequestError(f"steps must be an integer >= 1, got {steps!r}")
    label = effective_schedule(entry, schedule_type)
    n = steps + 1 if entry.discard_penultimate_sigma else steps
    if entry.kind == "lcm":
        from sdlab.samplers.lcm import lcm_sigmas  # noqa: PLC0415 - optional sibling module

        sigmas = lcm_sigmas(label, n, model.alphas_cumprod)
    else:
        sigmas = _schedules().get_sigmas(label, n, model, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                         family=family)
    if entry.discard_penultimate_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def sampler_sigmas(sampler_name: str, schedule_type: str, steps: int, model: SigmaModel) -> Tensor:
    """Sigmas A1111 hands to ``sampler_name`` for ``schedule_type`` and ``steps`` (option defaults)."""
    entry, label = resolve_sampler(sampler_name, schedule_type)
    return schedule_sigmas(entry, label, steps, model)


def sampler_timesteps(sampler_name: str, steps: int) -> Tensor:
    """The int64 timestep grid of a timestep sampler (DDIM, DDIM CFG++, PLMS, UniPC); schedule types do not apply."""
    entry, _ = resolve_sampler(sampler_name)
    if entry.kind != "timestep":
        raise InvalidRequestError(f"{entry.name} walks sigmas, not timesteps; use sampler_sigmas")
    try:
        from sdlab.samplers.timesteps import ddim_timesteps  # noqa: PLC0415 - optional sibling module
    except ImportError as exc:
        raise SdlabError(f"timestep samplers are not available in this build ({exc})") from exc
    return ddim_timesteps(steps)
