"""Conformance suite for samplers.json: whole A1111 sampler runs over a formula UNet.

Every case (txt2img, ``identical_to`` and img2img) is re-run from its own description (sampler, schedule type,
steps, strength) through :mod:`sdlab.samplers.registry` and :func:`sdlab.samplers.driver.run_sampling`, with
the formula model of the file's ``model`` field, CFG from ``settings`` and noise from a torch CPU generator
seeded with ``settings.seed`` (A1111's "CPU" source). Checked: schedule, keyword options, infotext params,
prompt-schedule length, every model call (sigma, UNet t and dtype, input/output sums), every callback,
noise draw count, Brownian-tree noise, LMS coefficients and the final latent (README tolerance: rtol/atol
about 1e-5 on latents).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sdlab.conformance import VectorSuite
from sdlab.samplers.brownian import BrownianTreeNoise
from sdlab.samplers.denoiser import (
    CFGDenoiser,
    CFGEpsModel,
    CompVisDenoiser,
    GuidanceCore,
    TimestepEpsDenoiser,
    img2img_steps,
)
from sdlab.samplers.driver import SamplingJob, run_sampling, sampler_options
from sdlab.samplers.kdiff import lms_coefficient
from sdlab.samplers.registry import (
    SamplerEntry,
    resolve_sampler,
    sampler_timesteps,
    schedule_infotext,
    schedule_sigmas,
)
from sdlab.samplers.sigma_model import SigmaModel, sd_sigma_model
from sdlab.samplers.types import StepInfo

LATENT_RTOL = 1e-5
LATENT_ATOL = 1e-5
SUM_RTOL = 2e-5
SCALAR_RTOL = 1e-5


@dataclass(frozen=True)
class Context:
    """Shared per file: the SD sigma model, settings and the reference noise draws."""

    model: SigmaModel
    settings: dict[str, Any]
    reference_draws: list[list[float]]
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)


def formula_eps(x: Tensor, t: Tensor, ctx: Tensor) -> Tensor:
    """The test UNet: ``0.1 tanh(x) + 0.01 cos(t/100) mean(x) + 0.05 c`` in float64, cast back to x's dtype."""
    x64 = x.double()
    t64 = t.double().reshape(-1, 1, 1, 1)
    c = ctx[:, 0, 0].double().reshape(-1, 1, 1, 1)
    return (0.1 * torch.tanh(x64) + 0.01 * torch.cos(t64 / 100.0) * x64.mean(dim=(1, 2, 3), keepdim=True)
            + 0.05 * c).to(x.dtype)


def _generators(seeds: tuple[int, ...]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _draw(generators: list[torch.Generator], shape: tuple[int, ...]) -> Tensor:
    """One A1111 ImageRNG draw: each image's generator draws ``shape[1:]``, stacked to ``shape``."""
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators])


@dataclass
class Recorder:
    """Collects UNet timesteps, guided-model calls, callbacks and the later noise draws of one run."""

    generators: list[torch.Generator]
    shape: tuple[int, ...]
    unet_t: list[Tensor] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[StepInfo] = field(default_factory=list)
    draws: list[Tensor] = field(default_factory=list)

    def unet(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.unet_t.append(t)
        return formula_eps(x, t, cond)

    def noise(self) -> Tensor:
        draw = _draw(self.generators, self.shape)
        self.draws.append(draw)
        return draw

    def wrap(self, model: Any) -> Any:
        def recorded(x: Tensor, sigma: Tensor, **kwargs: Any) -> Any:
            out = model(x, sigma, **kwargs)
            value = out.guided if hasattr(out, "guided") else out
            self.calls.append({"sigma": float(sigma[0]), "x": x.clone(), "out": value.clone()})
            return out

        return recorded


def _f32(v: Any) -> float:
    return float(np.float32(v))


def _close(got: float, want: float, what: str, rtol: float = SCALAR_RTOL, atol: float = 1e-6) -> None:
    if not math.isclose(got, want, rel_tol=rtol, abs_tol=atol):
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def _close_latent(got: Tensor, want: list[float], what: str) -> None:
    expected = torch.tensor(want, dtype=torch.float32)
    flat = got.reshape(-1).to(torch.float32)
    if flat.shape != expected.shape or not torch.allclose(flat, expected, rtol=LATENT_RTOL, atol=LATENT_ATOL):
        worst = (flat - expected).abs().max().item() if flat.shape == expected.shape else float("nan")
        raise AssertionError(f"{what}: latent differs (max abs diff {worst:.3g}, shape {tuple(flat.shape)})")


def _close_summary(got: Tensor, summary: dict[str, Any], what: str) -> None:
    flat = got.reshape(-1).double()
    scale = float(flat.abs().sum()) + 1.0
    for key, value in (("sum", flat.sum()), ("abs_sum", flat.abs().sum())):
        if key in summary:
            _close(float(value), summary[key], f"{what} {key}", rtol=0, atol=SUM_RTOL * scale)
    if "first4" in summary:
        _close_latent(got.reshape(-1)[:4], summary["first4"], f"{what} first4")


def _cases(data: dict[str, Any]) -> Any:
    for case in data.get("cases", []):
        yield f"txt2img/{case['id']} {case['sampler']} {case['schedule_type']} {case['steps']}", case
    for case in data.get("img2img", {}).get("cases", []):
        yield f"img2img/{case['id']} {case['sampler']} {case['schedule_type']} {case['steps']}", case


def _prepare(data: dict[str, Any], vectors_dir: Path) -> Context:
    by_id = {str(c["id"]): c for c in data.get("cases", [])}
    return Context(sd_sigma_model(), data["settings"], data["noise_reference"]["draws"], by_id)


def _init_latent(case: dict[str, Any], shape: tuple[int, ...]) -> Tensor:
    """The README's init latent ``float32(0.8 sin(0.5 (c+1) + 0.37 h - 0.23 w))``; the stored copy must match."""
    c, h, w = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape[1:]), indexing="ij")
    latent = torch.from_numpy(0.8 * np.sin(0.5 * (c + 1) + 0.37 * h - 0.23 * w)).to(torch.float32).unsqueeze(0)
    if "init_latent" in case:
        _close_latent(latent, case["init_latent"], "init_latent formula")
    return latent


def _conds(shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    return torch.ones(shape[0], 77, 8), -torch.ones(shape[0], 77, 8)


def _guided_model(entry: SamplerEntry, ctx: Context, rec: Recorder, shape: tuple[int, ...]) -> Any:
    cond, uncond = _conds(shape)
    cfg = float(ctx.settings["cfg_scale"])
    if entry.kind == "timestep":
        core = GuidanceCore(TimestepEpsDenoiser(rec.unet), lambda s: cond, lambda s: uncond, cfg)
        return CFGEpsModel(core)
    if entry.kind == "lcm":
        from sdlab.samplers.lcm import LCMDenoiser  # noqa: PLC0415 - sibling module, may be missing

        inner: Any = LCMDenoiser.from_alphas_cumprod(rec.unet, ctx.model.alphas_cumprod)
    else:
        inner = CompVisDenoiser(rec.unet, ctx.model)
    return CFGDenoiser(GuidanceCore(inner, lambda s: cond, lambda s: uncond, cfg))


def _schedule(entry: SamplerEntry, case: dict[str, Any], ctx: Context, steps: int) -> Tensor:
    if entry.kind == "timestep":
        got = sampler_timesteps(entry.name, steps)
        if "timesteps" in case and got.tolist() != case["timesteps"]:
            raise AssertionError(f"timesteps: got {got.tolist()}, expected {case['timesteps']}")
        return got
    got = schedule_sigmas(entry, case["schedule_type"], steps, ctx.model)
    if "sigmas" in case:
        want = case["sigmas"]
        if len(got) != len(want):
            raise AssertionError(f"sigmas: got {len(got)} values, expected {len(want)}")
        for i, (g, w) in enumerate(zip(got.tolist(), want)):
            _close(g, _f32(w), f"sigmas[{i}]", rtol=1e-6, atol=0)
    return got


def _check_kwargs(job: SamplingJob, case: dict[str, Any]) -> None:
    recorded = case.get("sampler_function_kwargs", {})
    options = sampler_options(job)
    for key, want in recorded.items():
        if key in ("sigmas", "timesteps", "noise_sampler", "n", "sigma_min", "sigma_max"):
            continue
        if key not in options:
            raise AssertionError(f"A1111 passes {key}={want!r} but the registry entry has no such option")
        want_value = float(want) if want in ("inf", "-inf") else want
        if options[key] != want_value:
            raise AssertionError(f"option {key}: registry {options[key]!r}, A1111 {want!r}")
    extra = set(options) - set(recorded)
    if extra:
        raise AssertionError(f"registry passes options A1111 does not: {sorted(extra)}")
    brownian = recorded.get("noise_sampler") == "BrownianTreeNoiseSampler"
    if brownian != job.entry.uses_brownian:
        raise AssertionError(f"uses_brownian is {job.entry.uses_brownian}, A1111 noise_sampler {recorded.get('noise_sampler')}")


def _check_params(entry: SamplerEntry, case: dict[str, Any], strength: float | None) -> None:
    want_params = case.get("extra_generation_params")
    if want_params is not None:
        got = dict(schedule_infotext(entry, case["schedule_type"]))
        if strength is not None:
            got["Denoising strength"] = strength
        if got != want_params:
            raise AssertionError(f"extra_generation_params: got {got}, expected {want_params}")
    # identical_to cases carry the referenced run's data, whose step count may differ (DPM adaptive).
    if "prompt_schedule_total_steps" in case and "identical_to" not in case:
        got_steps = entry.prompt_schedule_steps(case["steps"])
        if got_steps != case["prompt_schedule_total_steps"]:
            raise AssertionError(f"prompt schedule steps: got {got_steps}, expected {case['prompt_schedule_total_steps']}")


def _check_calls(rec: Recorder, case: dict[str, Any]) -> None:
    want = case.get("model_calls", [])
    if len(rec.calls) != len(want):
        raise AssertionError(f"model calls: got {len(rec.calls)}, expected {len(want)}")
    if len(rec.unet_t) != len(want):
        raise AssertionError(f"UNet calls: got {len(rec.unet_t)}, expected {len(want)} (one batched call per step)")
    for k, (got, exp, t) in enumerate(zip(rec.calls, want, rec.unet_t)):
        where = f"model call {k}"
        _close(got["sigma"], _f32(exp["sigma"]), f"{where} sigma", atol=1e-6)
        if str(t.dtype).removeprefix("torch.") != exp["t_dtype"]:
            raise AssertionError(f"{where}: UNet t dtype {t.dtype}, expected {exp['t_dtype']}")
        _close(float(t[0]), float(exp["t"]), f"{where} UNet t", rtol=1e-5, atol=1e-3)
        _close_summary(got["x"], exp["x"], f"{where} x")
        _close_summary(got["out"], exp["denoised"], f"{where} denoised")


def _check_callbacks(rec: Recorder, case: dict[str, Any], kind: str) -> None:
    want = case.get("callbacks", [])
    if len(rec.callbacks) != len(want):
        raise AssertionError(f"callbacks: got {len(rec.callbacks)}, expected {len(want)}")
    for k, (got, exp) in enumerate(zip(rec.callbacks, want)):
        where = f"callback {k}"
        if got.i != exp["i"]:
            raise AssertionError(f"{where}: i {got.i}, expected {exp['i']}")
        if kind != "timestep":
            _close(_f32(got.sigma), _f32(exp["sigma"]), f"{where} sigma", atol=1e-6)
            _close(_f32(got.sigma_hat), _f32(exp["sigma_hat"]), f"{where} sigma_hat", atol=1e-6)
        for key in ("steps", "nfe", "n_accept", "n_reject"):
            if key in exp and got.extra.get(key) != exp[key]:
                raise AssertionError(f"{where}: {key} {got.extra.get(key)}, expected {exp[key]}")
        for key in ("error", "h"):
            if key in exp:
                _close(float(got.extra[key]), float(exp[key]), f"{where} {key}", rtol=1e-3)
        if exp.get("x") is not None:
            _close_latent(got.x, exp["x"], f"{where} x")
        elif exp.get("x_summary") is not None:
            _close_summary(got.x, exp["x_summary"], f"{where} x")


def _check_brownian(job: SamplingJob, case: dict[str, Any], shape: tuple[int, ...]) -> None:
    info = case.get("brownian_noise")
    if not info:
        return
    init = info["init"]
    positive = job.schedule[job.schedule > 0]
    _close(float(positive.min()), _f32(init["sigma_min"]), "Brownian sigma_min", atol=0)
    _close(float(job.schedule.max()), _f32(init["sigma_max"]), "Brownian sigma_max", atol=0)
    seeds = tuple(int(s) for s in init["seed"])
    if seeds != job.seeds:
        raise AssertionError(f"Brownian seeds: job {job.seeds}, A1111 {seeds}")
    tree = BrownianTreeNoise(torch.zeros(shape), positive.min(), job.schedule.max(), seeds)
    for k, call in enumerate(info.get("calls", [])):
        got = tree(torch.tensor(_f32(call["sigma"])), torch.tensor(_f32(call["sigma_next"])))
        _close_summary(got, call, f"Brownian noise call {k}")


def _check_lms(case: dict[str, Any], sigmas: Tensor) -> None:
    t = sigmas.numpy()
    for c in case.get("lms_coefficients", []):
        got = lms_coefficient(c["order"], t, c["i"], c["j"])
        _close(got, c["coeff"], f"LMS coefficient order {c['order']} i {c['i']} j {c['j']}", rtol=1e-6, atol=1e-9)


def _check_noise(rec: Recorder, case: dict[str, Any], ctx: Context) -> None:
    count = case.get("noise_draws", {}).get("count")
    if count is not None and len(rec.draws) + 1 != count:
        raise AssertionError(f"noise draws: got {len(rec.draws) + 1} (incl. the initial noise), expected {count}")
    if rec.generators and ctx.settings.get("eta_noise_seed_delta", 0) == 0:
        for k, draw in enumerate(rec.draws[: len(ctx.reference_draws) - 1]):
            _close_latent(draw[0], ctx.reference_draws[k + 1], f"noise draw {k + 1} vs noise_reference")


def _job_options(entry: SamplerEntry, settings: dict[str, Any]) -> dict[str, Any]:
    """Sampler options from the file's ``p`` fields and option defaults, as A1111's ``initialize(p)``."""
    p, opts = settings.get("p_fields", {}), settings.get("options", {})
    defaults = dict(entry.options)
    out: dict[str, Any] = {}
    if entry.eta_option is not None:
        eta = p.get("eta")
        out["eta"] = eta if eta is not None else opts.get(f"eta_{entry.eta_option}", defaults.get("eta"))
    for key in ("s_churn", "s_tmin", "s_tmax", "s_noise"):
        if key in defaults and p.get(key) is not None:
            out[key] = float(p[key])
    return out


def _run(case: dict[str, Any], ctx: Context) -> tuple[Tensor, Recorder, SamplingJob]:
    entry, _ = resolve_sampler(case["sampler"], case["schedule_type"], convert_automatic=False)
    settings, shape = ctx.settings, tuple(ctx.settings["latent_shape"])
    opts = settings.get("options", {})
    strength = case.get("denoising_strength") if case.get("mode") == "img2img" else None
    steps, t_enc = (case["steps"], 0)
    if strength is not None:
        steps, t_enc = img2img_steps(case["steps"], float(strength), bool(case.get("img2img_fix_steps", False)))
    _check_params(entry, case, strength)
    schedule = _schedule(entry, case, ctx, steps)
    seeds = tuple(int(settings["seed"]) + i for i in range(shape[0]))
    generators = _generators(seeds)
    noise = _draw(generators, shape)
    _close_latent(noise[0], ctx.reference_draws[0], "initial noise vs noise_reference.draws[0]")
    ensd = int(opts.get("eta_noise_seed_delta", settings.get("eta_noise_seed_delta", 0)) or 0)
    rec = Recorder(_generators(tuple(s + ensd for s in seeds)) if ensd else generators, shape)
    if strength is not None:
        noise = noise * float(opts.get("initial_noise_multiplier", 1.0))
    job = SamplingJob(
        entry=entry, schedule=schedule, steps=steps,
        model_sigma_range=(ctx.model.sigma_min, ctx.model.sigma_max),
        alphas_cumprod=ctx.model.alphas_cumprod,
        init_latent=_init_latent(case, shape) if strength is not None else None, t_enc=t_enc,
        seeds=seeds, options=_job_options(entry, settings),
        sgm_noise_multiplier=bool(opts.get("sgm_noise_multiplier", False)),
    )
    _check_kwargs(job, case)
    model = rec.wrap(_guided_model(entry, ctx, rec, shape))
    final = run_sampling(job, model, noise, rec.noise, callback=rec.callbacks.append)
    return final, rec, job


def _check(case: dict[str, Any], ctx: Context) -> None:
    final, rec, job = _run(case, ctx)
    shape = tuple(ctx.settings["latent_shape"])
    if isinstance(case.get("x_start"), list) and rec.calls:
        _close_latent(rec.calls[0]["x"], case["x_start"], "x_start (first model input)")
    _check_calls(rec, case)
    _check_callbacks(rec, case, job.entry.kind)
    _check_noise(rec, case, ctx)
    _check_brownian(job, case, shape)
    if "lms_coefficients" in case:
        _check_lms(case, job.schedule)
    if "final" in case:
        _close_latent(final, case["final"], "final latent")
    elif "final_summary" in case:
        _close_summary(final, case["final_summary"], "final latent")
    ref = ctx.by_id.get(str(case.get("identical_to")))
    if ref is not None and "final" in ref:
        _close_latent(final, ref["final"], f"final latent vs identical case {case['identical_to']}")


SUITE = VectorSuite(file="samplers.json", cases=_cases, check=_check, prepare=_prepare)
