"""sdlab's fastest configuration against plain diffusers' default pipeline, per whole image.

    .venv/bin/python benchmarks/bench_fastest.py [--family sd1] [--steps 10] [--repeats 2]
                                                 [--configs fp32,bf16,bf16-cl] [--smoke] [--out FILE]

"diffusers' default" is what the guides run on a CPU: ``StableDiffusionPipeline`` in fp32 with SDPA, built
on the fp32 modules sdlab loaded from the same random full-size checkpoint (``suite.build_checkpoint``,
written once outside the repo). Each sdlab configuration is its own ``Engine`` (dtype + ``PerfSettings``);
every contestant makes the same whole image (text encoding + N Euler steps + VAE decode, CFG 7, one
fresh prompt per round so no text cache serves it), runs alternating.

Reported per configuration: median seconds per image, the speed-up over diffusers, the time inside the
UNet / text encoder / VAE, and the difference of its image from sdlab fp32's image of the same request
(max and mean absolute difference in 8-bit levels, PSNR in dB): the numeric cost of the speed. sdlab fp32
and diffusers do not make the same image (A1111's Euler sigmas differ from diffusers' "leading" spacing),
so the comparison of pixels is always against sdlab fp32.

Where bf16 wins it is because the CPU has AMX (``amx_bf16`` in /proc/cpuinfo): oneDNN then runs bf16
matmuls and convolutions on the tile unit. Without AMX, bf16 is slower than fp32 (measured on AVX-512
EPYC machines: 1.4-1.8x slower per UNet step), and the script says which case it ran in.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import (  # noqa: E402  (benchmarks/suite.py)
    NEGATIVE,
    PROMPT,
    SIZES,
    ModuleClock,
    PeakRss,
    build_checkpoint,
    diffusers_config_dir,
    machine,
    module_groups,
    shared_pipeline,
    timed,
)

from sdlab.engine import Engine  # noqa: E402
from sdlab.pipeline.perf import PerfSettings  # noqa: E402
from sdlab.types import GenerationRequest  # noqa: E402


@dataclass(frozen=True)
class Config:
    """One sdlab configuration: ``dtype`` name and the knobs."""

    name: str
    dtype: str
    perf: PerfSettings


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("fp32", "fp32", PerfSettings()),
    Config("bf16", "bf16", PerfSettings()),
    Config("bf16-cl", "bf16", PerfSettings(channels_last=True)),
    Config("fp16", "fp16", PerfSettings()),
    Config("fp32-cl", "fp32", PerfSettings(channels_last=True)),
)}


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def pixel_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Max / mean absolute difference (8-bit levels) and PSNR (dB; inf when equal) of two uint8 images."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((d.astype(np.float64) ** 2).mean())
    return {"max_abs": int(d.max()), "mean_abs": round(float(d.mean()), 3),
            "psnr_db": float("inf") if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)}


def measure(fn: Callable[[], Any], groups: dict[str, list[torch.nn.Module]], device: torch.device) -> tuple[dict[str, float], Any]:
    """Wall seconds, seconds inside each module group and peak RSS of one call of ``fn``."""
    clock = ModuleClock()
    with PeakRss() as rss, clock.watching(groups, device):
        seconds, out = timed(fn, device)
    return {"seconds": seconds, **{f"{k}_s": v for k, v in clock.seconds.items()}, "peak_rss": rss.peak}, out


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu")
    path = build_checkpoint(args.family, args.cache_dir, args.smoke)
    engines = {name: Engine(args.cache_dir, "cpu", CONFIGS[name].dtype, perf=CONFIGS[name].perf) for name in args.configs}
    models = {name: engine.load(path.stem) for name, engine in engines.items()}
    reference = models["fp32"]
    pipe = shared_pipeline(reference, args.family, diffusers_config_dir(reference, args.family, args.cache_dir))
    size = SIZES[args.family] if reference.vae_scale_factor == 8 else 64
    request = GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, steps=args.steps,
                                sampler="Euler", cfg_scale=7.0, seed=1, model=path.stem)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in ("diffusers", *args.configs)}
    images: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        prompt = f"{PROMPT} {r}"
        gen = torch.Generator().manual_seed(1)
        row, _ = measure(lambda: pipe(prompt, negative_prompt=NEGATIVE, height=size, width=size,  # noqa: B023
                                      num_inference_steps=args.steps, guidance_scale=7.0, generator=gen), module_groups(reference), device)
        rows["diffusers"].append(row)
        gc.collect()
        for name in args.configs:
            row, result = measure(lambda: engines[name].generate(request.replace(prompt=prompt)), module_groups(models[name]), device)  # noqa: B023
            rows[name].append(row)
            images[name] = np.asarray(result.images[0].image)
            gc.collect()
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in rows.items()), flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in rows.items()}
    base = med["diffusers"]["seconds"]
    results = {name: {"median": med[name], "speedup_over_diffusers": round(base / med[name]["seconds"], 3),
                      "image_vs_sdlab_fp32": pixel_difference(images[name], images["fp32"])} for name in args.configs}
    fastest = min(args.configs, key=lambda n: med[n]["seconds"])
    flags = cpu_flags()
    return {"command": " ".join(["benchmarks/bench_fastest.py", *sys.argv[1:]]), "machine": machine(device),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags, "family": args.family,
            "size": size, "steps": args.steps, "repeats": args.repeats, "runs": rows,
            "diffusers_fp32": med["diffusers"], "configs": results, "fastest": fastest}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, diffusers {m['diffusers']}; "
             f"AMX bf16: {report['amx_bf16']}. {report['family']} {report['size']}px, {report['steps']} Euler steps, CFG 7, "
             f"median of {report['repeats']}.", "",
             "| contestant | s / image | UNet s | TE s | VAE s | speed-up vs diffusers | image vs sdlab fp32 (max / mean levels, PSNR dB) |",
             "|---|---|---|---|---|---|---|"]
    d = report["diffusers_fp32"]
    lines.append(f"| diffusers default (fp32, SDPA) | {d['seconds']:.2f} | {d['unet_s']:.2f} | {d['text_s']:.2f} | {d['vae_s']:.2f} | 1 | (another schedule) |")
    for name, c in report["configs"].items():
        x, px = c["median"], c["image_vs_sdlab_fp32"]
        lines.append(f"| sdlab {name} | {x['seconds']:.2f} | {x['unet_s']:.2f} | {x['text_s']:.2f} | {x['vae_s']:.2f} | "
                     f"{c['speedup_over_diffusers']:.2f} | {px['max_abs']} / {px['mean_abs']} / {px['psnr_db']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="sd1", choices=tuple(SIZES))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", default="fp32,bf16", help=f"comma-separated from {','.join(CONFIGS)} (fp32 is always run)")
    ap.add_argument("--smoke", action="store_true", help="tiny checkpoint: checks the script runs (numbers meaningless)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sdlab-bench")
    ap.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = ap.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    args.configs = tuple(dict.fromkeys(["fp32", *names]))
    report = run(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
