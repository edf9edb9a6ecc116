"""Sigma schedules ("Schedule type" in A1111 v1.10.1): n steps -> a float32 tensor of noise levels.

Every schedule returns the sigmas a k-diffusion sampler walks through, highest first, normally n + 1 values
ending in 0.0. Two A1111 quirks are kept: "KL Optimal" returns n + 1 values ending at sigma_min (no 0), and
"DDIM" returns one extra step when 1000 % n leaves room (n = 30 -> 32 values).

:data:`SCHEDULES` is a registry keyed by A1111's labels ("Karras") with A1111's internal names
("karras") and infotext aliases ("SGMUniform") as aliases. :func:`get_sigmas` is the public entry point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry
from sdlab.samplers.sigma_model import SigmaModel

#: Align Your Steps 10-step tables (NVIDIA), noise levels highest first.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

#: A1111 option defaults for the Beta schedule ("beta_dist_alpha", "beta_dist_beta").
BETA_ALPHA = 0.6
BETA_BETA = 0.6


@dataclass(frozen=True)
class ScheduleInputs:
    """What a schedule function may use: step count ``n`` (>= 1), the effective sigma range (overrides
    applied), ``rho`` (the schedule's own default unless overridden), the model table and the family."""

    n: int
    sigma_min: float
    sigma_max: float
    rho: float | None
    model: SigmaModel
    family: str

    @property
    def is_sdxl(self) -> bool:
        """A1111's ``sd_model.is_sdxl``: true for SDXL base and refiner."""
        return self.family.lower().startswith("sdxl")


ScheduleFn = Callable[[ScheduleInputs], Tensor]


@dataclass(frozen=True)
class Schedule:
    """One schedule type.

    ``label``: A1111's UI / infotext label; ``name``: A1111's internal name; ``aliases``: further accepted
    names; ``function``: computes the sigmas; ``uses_model_sigmas``: reads the model's sigma table (A1111's
    ``need_inner_model``); ``default_rho``: None when the schedule has no rho parameter (A1111's -1), else
    the value used when no rho override is given.
    """

    label: str
    name: str
    function: ScheduleFn
    uses_model_sigmas: bool = False
    default_rho: float | None = None
    aliases: tuple[str, ...] = ()


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _floats_to_tensor(values: list[float] | np.ndarray) -> Tensor:
    """Python / float64 values -> float32 CPU tensor (A1111's ``torch.FloatTensor(list)``)."""
    return torch.tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)


def automatic(p: ScheduleInputs) -> Tensor:
    """The model's own schedule (k-diffusion ``get_sigmas``): uniform in fractional timestep 999 -> 0."""
    return p.model.uniform_sigmas(p.n)


def karras(p: ScheduleInputs) -> Tensor:
    """Karras et al. 2022: ``(smax^(1/rho) + ramp * (smin^(1/rho) - smax^(1/rho)))^rho``, ramp 0..1."""
    rho = 7.0 if p.rho is None else p.rho
    ramp = torch.linspace(0, 1, p.n)
    min_inv_rho = p.sigma_min ** (1 / rho)
    max_inv_rho = p.sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(p: ScheduleInputs) -> Tensor:
    """Log-linear from sigma_max to sigma_min."""
    return _append_zero(torch.linspace(math.log(p.sigma_max), math.log(p.sigma_min), p.n).exp())


def polyexponential(p: ScheduleInputs) -> Tensor:
    """``exp(ramp^rho * (ln smax - ln smin) + ln smin)`` with ramp 1..0 (rho 1 = exponential)."""
    rho = 1.0 if p.rho is None else p.rho
    ramp = torch.linspace(1, 0, p.n) ** rho
    log_min = math.log(p.sigma_min)
    return _append_zero(torch.exp(ramp * (math.log(p.sigma_max) - log_min) + log_min))


def _timestep_range(p: ScheduleInputs) -> tuple[Tensor, Tensor]:
    """Fractional timesteps of sigma_max and sigma_min (0-d float32)."""
    return p.model.sigma_to_t(p.sigma_max), p.model.sigma_to_t(p.sigma_min)


def _sigmas_at(model: SigmaModel, timesteps: Tensor) -> Tensor:
    """Sigma at each timestep, evaluated one scalar at a time as A1111 does, then a final 0."""
    return _floats_to_tensor([model.t_to_sigma(t).item() for t in timesteps] + [0.0])


def sgm_uniform(p: ScheduleInputs) -> Tensor:
    """Uniform in timestep from t(sigma_max) towards t(sigma_min), n + 1 points without the last."""
    start, end = _timestep_range(p)
    return _sigmas_at(p.model, torch.linspace(start.item(), end.item(), p.n + 1)[:-1])


def normal(p: ScheduleInputs) -> Tensor:
    """Uniform in timestep from t(sigma_max) to t(sigma_min), both ends included."""
    start, end = _timestep_range(p)
    return _sigmas_at(p.model, torch.linspace(start.item(), end.item(), p.n))


def kl_optimal(p: ScheduleInputs) -> Tensor:
    """``tan((i/n) atan(smin) + (1 - i/n) atan(smax))``, i = 0..n: n + 1 values, last = sigma_min, no 0."""
    alpha_min = torch.arctan(torch.tensor(p.sigma_min))
    alpha_max = torch.arctan(torch.tensor(p.sigma_max))
    frac = torch.arange(p.n + 1) / p.n
    return torch.tan(frac * alpha_min + (1.0 - frac) * alpha_max)


def _loglinear_resample(table: tuple[float, ...], n: int) -> np.ndarray:
    """Resample a descending table to n points, linearly in log sigma (float64)."""
    xs = np.linspace(0, 1, len(table))
    ys = np.log(np.asarray(table[::-1], dtype=np.float64))
    return np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()


def align_your_steps(p: ScheduleInputs) -> Tensor:
    """NVIDIA's 10-step table (SDXL table for SDXL models), log-linearly resampled unless n == 11; then 0.

    Ignores sigma_min / sigma_max (as A1111 does).
    """
    table = AYS_SDXL if p.is_sdxl else AYS_SD15
    values = list(table) if p.n == len(table) else list(_loglinear_resample(table, p.n))
    return _floats_to_tensor(values + [0.0])


def simple(p: ScheduleInputs) -> Tensor:
    """Every (len/n)-th model sigma from the top: ``sigmas[-(1 + int(k * len / n))]``, k < n; then 0."""
    sigmas = p.model.sigmas
    stride = len(sigmas) / p.n
    return _floats_to_tensor([sigmas[-(1 + int(k * stride))].item() for k in range(p.n)] + [0.0])


def ddim(p: ScheduleInputs) -> Tensor:
    """Model sigmas at indices 1, 1 + s, 1 + 2s, ... (s = max(len // n, 1)), highest first; then 0."""
    sigmas = p.model.sigmas
    stride = max(len(sigmas) // p.n, 1)
    picked = [sigmas[i].item() for i in range(1, len(sigmas), stride)]
    return _floats_to_tensor(picked[::-1] + [0.0])


def _beta_curve(n: int) -> np.ndarray:
    """Beta(0.6, 0.6) quantiles of ``1 - linspace(0, 1, n)`` (float64, 1 -> 0)."""
    from scipy import stats  # noqa: PLC0415 - heavy import, only this schedule needs it

    return np.array([stats.beta.ppf(x, BETA_ALPHA, BETA_BETA) for x in 1 - np.linspace(0, 1, n)])


def beta(p: ScheduleInputs) -> Tensor:
    """A1111 v1.10.1 Beta: Beta-quantile curve mapped linearly between sigma_min and sigma_max; then 0."""
    curve = _beta_curve(p.n)
    return _floats_to_tensor([p.sigma_min + x * (p.sigma_max - p.sigma_min) for x in curve] + [0.0])


def beta_dev(p: ScheduleInputs) -> Tensor:
    """A1111 dev-branch Beta (not in v1.10.1): the same curve mapped linearly in timestep, then sigma(t)."""
    start, end = _timestep_range(p)
    curve = torch.tensor(_beta_curve(p.n), dtype=torch.float32)
    return _append_zero(p.model.t_to_sigma(end + curve * (start - end)))


_SCHEDULE_LIST: tuple[Schedule, ...] = (
    Schedule("Automatic", "automatic", automatic, uses_model_sigmas=True),
    Schedule("Uniform", "uniform", automatic, uses_model_sigmas=True),
    Schedule("Karras", "karras", karras, default_rho=7.0),
    Schedule("Exponential", "exponential", exponential),
    Schedule("Polyexponential", "polyexponential", polyexponential, default_rho=1.0),
    Schedule("SGM Uniform", "sgm_uniform", sgm_uniform, uses_model_sigmas=True, aliases=("SGMUniform",)),
    Schedule("KL Optimal", "kl_optimal", kl_optimal),
    Schedule("Align Your Steps", "align_your_steps", align_your_steps),
    Schedule("Simple", "simple", simple, uses_model_sigmas=True),
    Schedule("Normal", "normal", normal, uses_model_sigmas=True),
    Schedule("DDIM", "ddim", ddim, uses_model_sigmas=True),
    Schedule("Beta", "beta", beta, uses_model_sigmas=True),
    Schedule("Beta (dev)", "beta_dev", beta_dev, uses_model_sigmas=True),
)


def _aliases(schedules: tuple[Schedule, ...]) -> tuple[tuple[str, str], ...]:
    """(alias, label) pairs: each internal name and extra alias that differs from its label (case-insensitively)."""
    return tuple(
        (alias, s.label)
        for s in schedules
        for alias in (s.name, *s.aliases)
        if alias.lower() != s.label.lower()
    )


#: Schedule types by A1111 label; A1111's internal names and infotext aliases also resolve.
SCHEDULES: Registry[Schedule] = Registry.of(
    "schedule type", ((s.label, s) for s in _SCHEDULE_LIST), _aliases(_SCHEDULE_LIST)
)


def _override(name: str, value: float | None) -> float | None:
    """An override value, or None when unused (None or 0, as A1111's option value 0)."""
    if value is None or value == 0:
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidRequestError(f"{name} must be a finite number > 0 (or 0 / None for the default), got {value!r}")
    return float(value)


def get_sigmas(
    schedule: str,
    steps: int,
    model: SigmaModel,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float | None = None,
    family: str = "sd1",
) -> Tensor:
    """Sigmas of ``schedule`` (label, name or alias) for ``steps`` >= 1 steps of ``model`` (float32, CPU).

    ``sigma_min`` / ``sigma_max`` / ``rho``: A1111's schedule overrides; None or 0 = unused (model range,
    schedule's default rho); rho only affects schedules that have one (Karras, Polyexponential), as in
    A1111. ``family``: "sd1", "sd2", "sdxl", "sdxl_refiner" (selects the Align Your Steps table).
    """
    entry = SCHEDULES.get(schedule)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidRequestError(f"steps must be an integer >= 1, got {steps!r}")
    lo = _override("sigma_min", sigma_min) or model.sigma_min
    hi = _override("sigma_max", sigma_max) or model.sigma_max
    if lo >= hi:
        raise InvalidRequestError(f"sigma_min ({lo}) must be smaller than sigma_max ({hi})")
    rho_value = _override("rho", rho)
    effective_rho = None if entry.default_rho is None else (rho_value or entry.default_rho)
    inputs = ScheduleInputs(steps, lo, hi, effective_rho, model, family)
    return entry.function(inputs).to(torch.float32)
