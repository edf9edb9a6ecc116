"""Timestep samplers over an :class:`EpsModel`: DDIM, DDIM CFG++ and PLMS, as A1111 v1.10.1 runs them.

A1111's timestep grid is ``T = clip(range(0, 1000, 1000 // steps) + 1, 0, 999)`` (int64). The samplers walk
it downwards from ``T[-1]`` and make ``len(T) - 1`` updates (update at index i goes from ``ac[T[i]]`` to
``a_prev[i] = ac[T[i-1]]``): ``T[0]`` is never evaluated and the run stops at alpha-bar ``ac[T[0]]``. The
start is unit noise, unscaled (txt2img), or the init latent noised to ``T[t_enc]`` (img2img).

Arithmetic mirrors A1111: per-step coefficients are Python floats taken from float32 (``a_t``) or float64
(``a_prev``, ``sigma_t``) tables and multiplied into float32 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError
from sdlab.samplers.types import EpsModel, EpsOut, NoiseFn, StepCallback, StepInfo

#: Number of training timesteps of the SD noise schedules.
NUM_TRAIN_TIMESTEPS = 1000
#: DDIM CFG++ maps the CFG scale range [0, 12.5] onto [0, 1].
CFGPP_SCALE_FACTOR = 1.0 / 12.5


def sqrt_f32(v: Tensor) -> Tensor:
    """Correctly rounded square root in ``v``'s dtype (computed in float64, rounded once).

    IEEE float32 sqrt is correctly rounded, but some torch CPU builds' vectorised float32 sqrt is off by
    1 ulp; rounding the float64 root reproduces the exact IEEE result on every machine.
    """
    return v.to(torch.float64).sqrt().to(v.dtype)


def ddim_timesteps(steps: int) -> Tensor:
    """A1111's timestep grid for ``steps`` (1..1000): ``clip(arange(0, 1000, 1000 // steps) + 1, 0, 999)``, int64.

    The grid has ``ceil(1000 / (1000 // steps))`` entries, which exceeds ``steps`` when 1000 % steps leaves room.
    """
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise InvalidRequestError(f"timestep samplers need 1..{NUM_TRAIN_TIMESTEPS} steps, got {steps}")
    grid = torch.arange(0, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS // steps, dtype=torch.int64) + 1
    return torch.clip(grid, 0, NUM_TRAIN_TIMESTEPS - 1)


def img2img_steps(steps: int, denoising_strength: float, *, fix_steps: bool = False) -> tuple[int, int]:
    """A1111's ``setup_img2img_steps``: ``(total_steps, t_enc)`` for a strength in [0, 1].

    Default: ``t_enc = int(min(strength, 0.999) * steps)``. With ``fix_steps`` (option img2img_fix_steps) the
    grid is stretched to ``int(steps / min(strength, 0.999))`` steps and ``t_enc = steps - 1``.
    """
    if not 0.0 <= denoising_strength <= 1.0:
        raise InvalidRequestError(f"denoising strength must be in [0, 1], got {denoising_strength}")
    strength = min(denoising_strength, 0.999)
    if fix_steps:
        total = int(steps / strength) if denoising_strength > 0 else 0
        return total, steps - 1
    return steps, int(strength * steps)


def img2img_timesteps(
    steps: int, denoising_strength: float, *, fix_steps: bool = False
) -> tuple[Tensor, int, int]:
    """``(timesteps[:t_enc], t_enc, noise_timestep)`` for an img2img pass of a timestep sampler.

    ``noise_timestep = T[t_enc]`` is where the init latent is noised to (see :func:`noise_latent`); the
    sampler then runs over the truncated grid (its first model call is at ``T[t_enc - 1]``).
    """
    total, t_enc = img2img_steps(steps, denoising_strength, fix_steps=fix_steps)
    grid = ddim_timesteps(total)
    if not 0 <= t_enc < grid.shape[0]:
        raise InvalidRequestError(
            f"img2img: t_enc {t_enc} outside the {grid.shape[0]}-entry timestep grid; lower the strength or steps"
        )
    return grid[:t_enc], t_enc, int(grid[t_enc])


def noise_latent(init_latent: Tensor, noise: Tensor, timestep: int, alphas_cumprod: Tensor) -> Tensor:
    """Forward-diffuse ``init_latent`` to ``timestep``: ``x*sqrt(ac[t]) + noise*sqrt(1 - ac[t])`` (float32 like ac)."""
    a = alphas_cumprod[timestep]
    return init_latent * sqrt_f32(a) + noise * sqrt_f32(1 - a)


@dataclass(frozen=True)
class DDIMTables:
    """Per-index DDIM coefficients for a grid ``T``: ``a = ac[T]`` (float32), ``a_prev = ac[[0] + T[:-1]]``
    (float64), ``sqrt_one_minus_a`` (float32) and ``sigma = eta*sqrt((1-a_prev)/(1-a)*(1-a/a_prev))`` (float64)."""

    a: Tensor
    a_prev: Tensor
    sqrt_one_minus_a: Tensor
    sigma: Tensor


def ddim_tables(timesteps: Tensor, alphas_cumprod: Tensor, eta: float = 0.0) -> DDIMTables:
    """Build :class:`DDIMTables` for ``timesteps`` (int64) over the float32 ``alphas_cumprod`` table."""
    ts = timesteps.to(torch.int64)
    a = alphas_cumprod[ts]
    prev_idx = torch.nn.functional.pad(ts[:-1], pad=(1, 0))
    a_prev = alphas_cumprod[prev_idx].to(torch.float64)
    one_minus_a = (1 - a).to(torch.float64)  # float32 subtraction, as A1111 mixes numpy and torch here
    sigma = eta * torch.sqrt((1 - a_prev) / one_minus_a * (1 - a.to(torch.float64) / a_prev))
    return DDIMTables(a=a, a_prev=a_prev, sqrt_one_minus_a=sqrt_f32(1 - a), sigma=sigma)


def _ones(x: Tensor) -> Tensor:
    """A float ``[B, 1, 1, 1]`` tensor of ones matching ``x`` (A1111's ``s_in``, shaped to broadcast)."""
    return x.new_ones([x.shape[0]] + [1] * (x.ndim - 1))


def _step_t(timesteps: Tensor, index: int, x: Tensor) -> Tensor:
    """The model's timestep argument: ``T[index]`` as float ``[B]`` (A1111 passes ``T[i].item() * ones``)."""
    return timesteps[index].item() * x.new_ones([x.shape[0]])


def _ddim_update(
    x: Tensor, eps_x0: Tensor, eps_dir: Tensor, tables: DDIMTables, index: int, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """One DDIM update to ``a_prev[index]``; returns ``(x_prev, pred_x0)``.

    ``eps_x0`` predicts x0, ``eps_dir`` points back to x_t (both are the guided eps for plain DDIM).
    """
    s = _ones(x)
    a_t = tables.a[index].item() * s
    a_prev = tables.a_prev[index].item() * s
    sigma_t = tables.sigma[index].item() * s
    sqrt_one_minus_at = tables.sqrt_one_minus_a[index].item() * s
    pred_x0 = (x - sqrt_one_minus_at * eps_x0) / sqrt_f32(a_t)
    dir_xt = sqrt_f32(1.0 - a_prev - sigma_t**2) * eps_dir
    return sqrt_f32(a_prev) * pred_x0 + dir_xt + sigma_t * noise, pred_x0


def _report(callback: StepCallback | None, i: int, x: Tensor, denoised: Tensor) -> None:
    """Timestep samplers report after the update with sigma = sigma_hat = 0 (as A1111 does)."""
    if callback is not None:
        callback(StepInfo(i=i, sigma=0.0, sigma_hat=0.0, x=x, denoised=denoised))


def _run_ddim(
    model: EpsModel,
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    noise: NoiseFn,
    callback: StepCallback | None,
    eta: float,
    cfgpp: bool,
) -> Tensor:
    """Shared DDIM / DDIM CFG++ loop: ``len(timesteps) - 1`` updates, one noise draw per update."""
    tables = ddim_tables(timesteps, alphas_cumprod, eta)
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        t = _step_t(timesteps, index, x)
        out: EpsOut = model(x, t, cfg_scale_factor=CFGPP_SCALE_FACTOR) if cfgpp else model(x, t)
        eps_dir = out.uncond if cfgpp else out.guided
        x, pred_x0 = _ddim_update(x, out.guided, eps_dir, tables, index, noise())
        _report(callback, i, x, pred_x0)
    return x


def sample_ddim(
    model: EpsModel,
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    *,
    noise: NoiseFn,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """A1111 DDIM: ``len(timesteps) - 1`` updates from ``T[-1]`` down to alpha-bar ``ac[T[0]]``.

    ``x``: unit noise (txt2img) or the noised init latent (img2img, with truncated ``timesteps``);
    ``eta`` in [0, 1] (A1111's "Eta DDIM"); noise is drawn every update and scaled by ``sigma_t`` (0 at eta 0).
    """
    return _run_ddim(model, x, timesteps, alphas_cumprod, noise, callback, eta, cfgpp=False)


def sample_ddim_cfgpp(
    model: EpsModel,
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    *,
    noise: NoiseFn,
    callback: StepCallback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """A1111 DDIM CFG++: DDIM whose x0 uses the eps guided at ``cfg_scale / 12.5`` and whose direction term
    uses the unconditional eps."""
    return _run_ddim(model, x, timesteps, alphas_cumprod, noise, callback, eta, cfgpp=True)


def plms_eps(e_t: Tensor, old_eps: list[Tensor]) -> Tensor:
    """Adams-Bashforth combination of the current eps with up to 3 previous ones (newest last), orders 2..4."""
    if len(old_eps) == 1:
        return (3 * e_t - old_eps[-1]) / 2
    if len(old_eps) == 2:
        return (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
    return (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24


def sample_plms(
    model: EpsModel,
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    *,
    noise: NoiseFn | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """A1111 PLMS: ``len(timesteps) - 1`` deterministic updates (``noise`` is unused), ``len(timesteps)`` model
    calls; the first update is a pseudo improved Euler step, later ones Adams-Bashforth on stored eps."""
    tables = ddim_tables(timesteps, alphas_cumprod)
    old_eps: list[Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, _step_t(timesteps, index, x)).guided
        if not old_eps:
            x_prev, _ = _plms_update(x, e_t, tables, index)
            e_next = model(x_prev, _step_t(timesteps, max(index - 1, 0), x)).guided
            e_prime = (e_t + e_next) / 2
        else:
            e_prime = plms_eps(e_t, old_eps)
        x, pred_x0 = _plms_update(x, e_prime, tables, index)
        old_eps = (old_eps + [e_t])[-3:]
        _report(callback, i, x, pred_x0)
    return x


def _plms_update(x: Tensor, e_t: Tensor, tables: DDIMTables, index: int) -> tuple[Tensor, Tensor]:
    """Deterministic DDIM update without a sigma term (PLMS's ``get_x_prev_and_pred_x0``)."""
    s = _ones(x)
    a_t = tables.a[index].item() * s
    a_prev = tables.a_prev[index].item() * s
    sqrt_one_minus_at = tables.sqrt_one_minus_a[index].item() * s
    pred_x0 = (x - sqrt_one_minus_at * e_t) / sqrt_f32(a_t)
    return sqrt_f32(a_prev) * pred_x0 + sqrt_f32(1.0 - a_prev) * e_t, pred_x0


__all__ = [
    "CFGPP_SCALE_FACTOR",
    "DDIMTables",
    "ddim_tables",
    "ddim_timesteps",
    "img2img_steps",
    "img2img_timesteps",
    "noise_latent",
    "plms_eps",
    "sample_ddim",
    "sample_ddim_cfgpp",
    "sample_plms",
    "sqrt_f32",
]
