"""Test-only harness for samplers.json (README section 7): formula UNet, A1111-style CFG wrappers, seeded noise,
and a comparison of recorded model calls / callbacks / final latent against a case."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from sdlab.samplers.types import EpsOut, StepInfo

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "samplers.json"
SHAPE = (1, 4, 8, 8)
CFG_SCALE = 7.0
TOL = 1e-5


@functools.lru_cache(maxsize=1)
def vectors() -> dict[str, Any]:
    """The parsed samplers.json (skips the test when the shared vectors are absent)."""
    if not VECTORS.exists():
        pytest.skip(f"conformance vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())


def cases(*samplers: str) -> list[dict[str, Any]]:
    """All txt2img cases of the given sampler names."""
    return [c for c in vectors()["cases"] if c["sampler"] in samplers]


def case_id(case: dict[str, Any]) -> str:
    return f"{case['sampler']}-{case['schedule_type']}-{case['steps']}"


def alphas_cumprod() -> Tensor:
    """SD1.5's float32 alpha-bar table (float64 cumprod, cast)."""
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def formula_eps(x: Tensor, t: Tensor, ctx: Tensor) -> Tensor:
    """The README's formula UNet: eps from x, timestep t and context scalar c = ctx[b, 0, 0]."""
    x64 = x.double()
    t64 = t.double().reshape(-1, 1, 1, 1)
    c = ctx[:, 0, 0].double().reshape(-1, 1, 1, 1)
    mean = x64.mean(dim=(1, 2, 3), keepdim=True)
    return (0.1 * torch.tanh(x64) + 0.01 * torch.cos(t64 / 100.0) * mean + 0.05 * c).to(x.dtype)


def contexts() -> Tensor:
    """``[cond, uncond]`` context batch: [77, 8] filled with +1.0 and -1.0."""
    return torch.stack([torch.full((77, 8), 1.0), torch.full((77, 8), -1.0)])


@dataclass
class Recorder:
    """Everything a run reports: CFG-level model calls, callbacks and noise draws."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[StepInfo] = field(default_factory=list)
    draws: int = 0

    def callback(self, info: StepInfo) -> None:
        self.callbacks.append(StepInfo(info.i, float(info.sigma), float(info.sigma_hat), info.x.clone()))

    def unet(self, x: Tensor, t: Tensor, ctx: Tensor) -> Tensor:
        self.calls[-1]["t"] = t
        return formula_eps(x, t, ctx)


def _combine(out: Tensor, scale: float) -> Tensor:
    """A1111's CFG combination: clone of the uncond row plus (cond - uncond) * (1.0 * scale)."""
    uncond = out[1:]
    guided = torch.clone(uncond)
    guided[0] += (out[0] - uncond[0]) * (1.0 * scale)
    return guided


@dataclass
class EpsCFG:
    """CFG EpsModel for timestep samplers: one UNet call on ``[x, x]``, t unscaled."""

    rec: Recorder

    def __call__(self, x: Tensor, t: Tensor, *, cfg_scale_factor: float = 1.0) -> EpsOut:
        self.rec.calls.append({"sigma": t, "x": x})
        out = self.rec.unet(torch.cat([x, x]), torch.cat([t, t]), contexts())
        guided = _combine(out, CFG_SCALE * cfg_scale_factor)
        self.rec.calls[-1]["denoised"] = guided
        return EpsOut(guided=guided, uncond=torch.clone(out[1:]))


InnerDenoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class DenoiserCFG:
    """CFG Denoiser over an inner ``(x, sigma, ctx) -> denoised`` (k-diffusion / LCM samplers)."""

    rec: Recorder
    inner: InnerDenoiser

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.rec.calls.append({"sigma": sigma, "x": x})
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), contexts())
        guided = _combine(out, CFG_SCALE)
        self.rec.calls[-1]["denoised"] = guided
        return guided


@dataclass(frozen=True)
class CompVisDenoiser:
    """k-diffusion CompVisDenoiser (quantize off) over an ``unet(x, t, ctx)``, for the Restart tests."""

    unet: InnerDenoiser
    log_sigmas: Tensor

    @staticmethod
    def build(unet: InnerDenoiser, ac: Tensor) -> "CompVisDenoiser":
        return CompVisDenoiser(unet, ((1 - ac) / ac).double().sqrt().float().log())

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def __call__(self, x: Tensor, sigma: Tensor, ctx: Tensor) -> Tensor:
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / (s**2 + 1.0).double().sqrt().float()
        return x + self.unet(x * c_in, self.sigma_to_t(sigma), ctx) * -s


@dataclass
class Noise:
    """A1111 'CPU' ImageRNG: one generator seeded 1234; draw 0 is the initial noise."""

    rec: Recorder
    gen: torch.Generator = field(default_factory=lambda: torch.Generator("cpu").manual_seed(1234))

    def __call__(self) -> Tensor:
        self.rec.draws += 1
        return torch.randn(SHAPE[1:], generator=self.gen).unsqueeze(0)


def latent(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(SHAPE)


def init_latent() -> Tensor:
    """README img2img init latent: float32(0.8*sin(0.5*(c+1) + 0.37*h - 0.23*w))."""
    c, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in SHAPE[1:]), indexing="ij")
    return (0.8 * torch.sin(0.5 * (c + 1) + 0.37 * h - 0.23 * w)).to(torch.float32).unsqueeze(0)


def _close(got: float, want: float, scale: float, what: str) -> None:
    assert abs(got - want) <= TOL * max(abs(want), scale, 1.0), f"{what}: got {got!r}, want {want!r}"


def _summary(x: Tensor, want: dict[str, Any], what: str) -> None:
    x64 = x.double()
    _close(float(x64.sum()), want["sum"], want["abs_sum"], f"{what}.sum")
    _close(float(x64.abs().sum()), want["abs_sum"], want["abs_sum"], f"{what}.abs_sum")
    if "first4" in want:
        torch.testing.assert_close(x.flatten()[:4], torch.tensor(want["first4"]), rtol=TOL, atol=TOL)


def _full(x: Tensor, want: list[float], what: str) -> None:
    torch.testing.assert_close(x, latent(want), rtol=TOL, atol=TOL, msg=lambda m: f"{what}: {m}")


def check_run(case: dict[str, Any], rec: Recorder, final: Tensor) -> None:
    """Compare a run with a case: every model call, every callback, the draw count and the final latent."""
    assert len(rec.calls) == len(case["model_calls"]), "model call count"
    for k, (got, want) in enumerate(zip(rec.calls, case["model_calls"])):
        t = got["t"]
        assert str(t.dtype).removeprefix("torch.") == want["t_dtype"], f"call {k} t dtype"
        _close(float(t.flatten()[0]), float(want["t"]), 0.0, f"call {k} t")
        _close(float(got["sigma"].flatten()[0]), float(want["sigma"]), 0.0, f"call {k} sigma")
        _summary(got["x"], want["x"], f"call {k} x")
        _summary(got["denoised"], want["denoised"], f"call {k} denoised")
    assert len(rec.callbacks) == len(case["callbacks"]), "callback count"
    for k, (got, want) in enumerate(zip(rec.callbacks, case["callbacks"])):
        assert got.i == want["i"], f"callback {k} i"
        _close(float(got.sigma), float(want["sigma"]), 0.0, f"callback {k} sigma")
        _close(float(got.sigma_hat), float(want["sigma_hat"]), 0.0, f"callback {k} sigma_hat")
        if want.get("x") is not None:
            _full(got.x, want["x"], f"callback {k} x")
        else:
            _summary(got.x, want["x_summary"], f"callback {k} x")
    assert rec.draws == case["noise_draws"]["count"], "noise draw count"
    _full(final, case["final"], "final")
