"""Sampler overhead outside the UNet, as a fraction of one full-size SD1.5 UNet step (CFG, 512x512).

Runs each A1111 sampler through sdlab's real sampling stack (GuidanceCore, CFG batching, scheduled
conditioning, the sampler function, noise, callbacks) with a UNet stand-in that costs nothing, and
compares the time per model call with one real UNet call on random full-size SD1.5 weights (built from
the bundled config; nothing is downloaded). Usage:

    .venv/bin/python benchmarks/bench_sampler_overhead.py [--steps 20] [--unet-calls 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from diffusers import UNet2DConditionModel

from sdlab.models.derive import load_template
from sdlab.models.load import sd_alphas_cumprod
from sdlab.pipeline.conditioning import EncodedPlan, EncodedText, ScheduledConditioning
from sdlab.pipeline.unet import UNetCall
from sdlab.prompt.plan import plan_prompts
from sdlab.rng import ImageRNG
from sdlab.samplers.denoiser import CFGDenoiser, CFGEpsModel, CompVisDenoiser, GuidanceCore, TimestepEpsDenoiser
from sdlab.samplers.driver import SamplingJob, run_sampling
from sdlab.samplers.registry import SAMPLERS, sampler_timesteps, schedule_sigmas
from sdlab.samplers.sigma_model import SigmaModel

LATENT = (4, 64, 64)


def conditioning(steps: int, second_order: bool) -> ScheduledConditioning:
    plan = plan_prompts("a castle on a hill", "blurry", steps, second_order=second_order)
    cond = EncodedText(torch.randn(77, 768), None)
    uncond = EncodedText(torch.randn(77, 768), None)
    return ScheduledConditioning(plan, EncodedPlan(({"a castle on a hill": cond},), {"blurry": uncond}), 1, {}, {})


def free_unet(x: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
    """A UNet that costs nothing: returns a fixed fraction of its input."""
    return x * 0.1


def run_sampler(name: str, steps: int, unet) -> tuple[float, int]:
    """Seconds for one sampling with ``unet``, and the number of guided model calls."""
    entry = SAMPLERS.get(name)
    sigma_model = SigmaModel.from_alphas_cumprod(sd_alphas_cumprod())
    cond = conditioning(steps, entry.second_order)
    if entry.kind == "timestep":
        inner, schedule = TimestepEpsDenoiser(unet), sampler_timesteps(name, steps)
    elif entry.kind == "lcm":
        from sdlab.samplers.lcm import LCMDenoiser

        inner, schedule = LCMDenoiser.from_alphas_cumprod(unet, sigma_model.alphas_cumprod), schedule_sigmas(entry, "Automatic", steps, sigma_model)
    else:
        inner, schedule = CompVisDenoiser(unet, sigma_model), schedule_sigmas(entry, "Automatic", steps, sigma_model)
    core = GuidanceCore(inner, cond.cond_at, cond.uncond_at, 7.0)
    model = CFGEpsModel(core) if entry.kind == "timestep" else CFGDenoiser(core)
    rng = ImageRNG(LATENT, [1], source="CPU")
    job = SamplingJob(entry=entry, schedule=schedule, steps=steps,
                      model_sigma_range=(float(sigma_model.sigma_min), float(sigma_model.sigma_max)),
                      alphas_cumprod=sigma_model.alphas_cumprod, seeds=(1,))
    start = time.perf_counter()
    run_sampling(job, model, rng.next(), rng.next)
    return time.perf_counter() - start, core.step


def unet_step_seconds(calls: int) -> float:
    """Median seconds of one CFG UNet call (batch 2, 64x64 latent, 77 tokens) on random SD1.5 weights."""
    unet = UNet2DConditionModel.from_config(load_template("sd1", "unet")).eval()
    call = UNetCall(unet, torch.float32)
    x, t = torch.randn(2, *LATENT), torch.tensor([500.0, 500.0])
    cond = {"context": torch.randn(2, 77, 768)}
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call(x, t, cond)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unet-calls", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    unet_s = unet_step_seconds(args.unet_calls)
    rows = []
    for name in SAMPLERS.names():
        seconds, calls = run_sampler(name, args.steps, free_unet)
        per_call = seconds / max(calls, 1)
        rows.append({"sampler": name, "model_calls": calls, "overhead_ms_per_call": 1000 * per_call,
                     "fraction_of_unet_step": per_call / unet_s})
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"full-size SD1.5 UNet call with CFG (batch 2, 512x512): {unet_s:.2f} s")
    print(f"{'sampler':<20}{'calls':>6}{'overhead ms/call':>18}{'% of UNet step':>16}")
    for r in rows:
        print(f"{r['sampler']:<20}{r['model_calls']:>6}{r['overhead_ms_per_call']:>18.2f}{100 * r['fraction_of_unet_step']:>15.3f}%")
    worst = max(rows, key=lambda r: r["fraction_of_unet_step"])
    print(f"worst: {worst['sampler']} at {100 * worst['fraction_of_unet_step']:.3f}% of a UNet step (target < 2%)")
    print(json.dumps({"unet_step_s": unet_s, "rows": rows}))


if __name__ == "__main__":
    main()
