"""sdlab vs plain diffusers on the same random full-size weights, in one process, alternating runs.

    .venv/bin/python benchmarks/suite.py [--quick] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                          [--families sd1,sdxl] [--cache-dir DIR] [--out-dir DIR] [--smoke]

Builds SD1.5 / SDXL single-file checkpoints with random weights once (default init, saved fp16, under
``--cache-dir``, outside the repo; nothing is downloaded) and measures, sdlab and diffusers alternating:
checkpoint load (vs one raw read of the file and vs diffusers ``from_single_file`` with local configs),
one CFG UNet step, a whole image (text encoding + N Euler steps + VAE decode) with its peak RSS and the
time spent outside UNet / text encoders / VAE per step, LoRA apply/undo (SD1.5), the UNet's FLOPs per
step (``torch.utils.flop_counter`` on the meta device) and the achieved FLOP/s as a fraction of this
machine's measured matmul peak in the same dtype. Writes ``suite-<tag>.json`` and ``suite-<tag>.md``.
``--smoke`` uses the tiny test checkpoints (seconds; checks the suite itself, numbers meaningless).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdlab.engine import Engine
from sdlab.models.files import HashCache, read_header
from sdlab.models.load import LoadedModel, load_checkpoint
from sdlab.pipeline.perf import PerfSettings, model_bytes
from sdlab.pipeline.unet import UNetCall
from sdlab.types import GenerationRequest
from suite_measure import ModuleClock, PeakRss, alternate, machine, matmul_peak, ratio, timed  # beside this script

ROOT = Path(__file__).resolve().parent.parent
PROMPT, NEGATIVE = "a castle on a hill at night, stars, mist", "blurry, low quality"
SIZES = {"sd1": 512, "sdxl": 1024}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class SuiteConfig:
    """What to run: ``steps`` per whole image, ``repeats`` alternating pairs per measurement."""

    device: str
    dtype: str
    families: tuple[str, ...]
    steps: dict[str, int]
    repeats: int
    lora_rank: int
    cache_dir: Path
    smoke: bool
    vae_tiling_pixels: int = 0
    variants: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------ checkpoints

def build_checkpoint(family: str, cache_dir: Path, smoke: bool) -> Path:
    """A random single-file checkpoint (default init, fp16 on disk), written once under ``cache_dir``."""
    path = cache_dir / "Stable-diffusion" / f"random-{family}{'-tiny' if smoke else ''}.safetensors"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if smoke:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers.tiny_checkpoints import make_tiny_checkpoint

        make_tiny_checkpoint(path, family, seed=1)
        return path
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdlab.models.convert import save_single_file
    from sdlab.models.derive import load_template

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(load_template(family, "unet")).half()
    vae = AutoencoderKL.from_config(load_template(family, "vae")).half()
    names = ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",)
    encoders = []
    for i, name in enumerate(names):
        cfg = CLIPTextConfig.from_dict({k: v for k, v in load_template(family, name).items() if k != "architectures"})
        encoders.append((CLIPTextModelWithProjection if i == 1 else CLIPTextModel)(cfg).half())
    tmp = path.with_suffix(".partial.safetensors")
    save_single_file(tmp, unet, vae, encoders, family)
    tmp.rename(path)
    return path


def diffusers_config_dir(model: LoadedModel, family: str, cache_dir: Path) -> Path:
    """A local diffusers pipeline folder (configs + tokenizer files, no weights) for ``from_single_file``."""
    import diffusers
    from diffusers import EulerDiscreteScheduler

    folder = cache_dir / f"diffusers-config-{family}-{Path(model.path).stem}"
    sdxl = family == "sdxl"
    index: dict[str, Any] = {"_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
                             "_diffusers_version": diffusers.__version__,
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                             "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"]}
    if sdxl:
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"], "force_zeros_for_empty_prompt": True}
    else:
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    configs = {"unet": model.configs.unet, "vae": model.configs.vae}
    for i, te in enumerate(model.text_encoders):
        configs["text_encoder_2" if i else "text_encoder"] = te.config.to_dict()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    for name, cfg in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(dict(cfg), default=str))
    scheduler.save_config(folder / "scheduler")
    bpe = Path(__import__("sdlab").__file__).parent / "data" / "clip_bpe"
    for tok in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        (folder / tok).mkdir(parents=True, exist_ok=True)
        for f in ("vocab.json", "merges.txt"):
            (folder / tok / f).write_bytes((bpe / f).read_bytes())
        (folder / tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def pipeline_class(family: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline


def shared_pipeline(model: LoadedModel, family: str, config_dir: Path) -> Any:
    """A plain diffusers pipeline on the very modules sdlab loaded (same weights, no second copy)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    parts: dict[str, Any] = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoders[0],
                             "tokenizer": CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
                             "scheduler": EulerDiscreteScheduler.from_pretrained(config_dir / "scheduler")}
    if family == "sdxl":
        parts |= {"text_encoder_2": model.text_encoders[1],
                  "tokenizer_2": CLIPTokenizer.from_pretrained(config_dir / "tokenizer_2")}
    else:
        parts |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = pipeline_class(family)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------ measurements

def bench_load(path: Path, family: str, config_dir: Path, cfg: SuiteConfig) -> dict[str, Any]:
    """Seconds to read the file once, to load it with sdlab and with diffusers ``from_single_file``."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]

    def raw() -> float:
        start = time.perf_counter()
        with path.open("rb", buffering=0) as f:
            while f.read(64 << 20):
                pass
        return time.perf_counter() - start

    hashes = HashCache()  # the hash is computed once per file and kept (an Engine persists it)

    def sdlab(cache: HashCache | None = hashes) -> float:
        seconds, model = timed(lambda: load_checkpoint(path, device=device, dtype=dtype, hash_cache=HashCache() if cache is None else cache), device)
        del model
        return seconds

    def plain() -> float:
        seconds, pipe = timed(lambda: pipeline_class(family).from_single_file(
            str(path), config=str(config_dir), local_files_only=True, torch_dtype=dtype).to(device), device)
        del pipe
        return seconds

    raw()  # the file is in the page cache for every contestant alike
    sdlab(), plain()  # unmeasured: each side's first call imports its model classes (~3 s) and meets fresh memory
    # fresh-memory first touch on a VM is noisy (one load: 0.6-3.5 s), so at least 5 rounds
    runs = {"raw_read": raw, "sdlab": sdlab, "diffusers": plain, "sdlab_hashing": lambda: sdlab(None)}
    times = alternate(runs, max(5, cfg.repeats))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": times, "median": med, "min": {k: min(v) for k, v in times.items()},
            "sdlab_vs_raw_read": ratio(med["sdlab"], med["raw_read"]),
            "sdlab_vs_diffusers": ratio(med["sdlab"], med["diffusers"]), "file_bytes": path.stat().st_size,
            "file_dtypes": sorted({t.dtype for t in read_header(path).tensors})}


def unet_inputs(model: LoadedModel, family: str, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    size = SIZES[family] if model.vae_scale_factor == 8 else 64
    h = size // model.vae_scale_factor
    x = torch.randn(2, model.latent_channels, h, h, device=device)
    width = int(model.unet.config.cross_attention_dim)
    cond = {"context": torch.randn(2, 77, width, device=device)}
    if family == "sdxl":
        proj = int(model.unet.config.projection_class_embeddings_input_dim) - 6 * int(model.unet.config.addition_time_embed_dim)
        cond |= {"text_embeds": torch.randn(2, proj, device=device),
                 "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32, device=device)}
    return x, cond


def unet_flops(model: LoadedModel, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> int:
    """FLOPs of one CFG UNet call (batch 2), counted on the meta device (no compute)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(model.configs.unet))
    meta = {k: v.to("meta") for k, v in cond.items()}
    kwargs = {"added_cond_kwargs": {"text_embeds": meta["text_embeds"], "time_ids": meta["time_ids"]}} if "text_embeds" in meta else {}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        unet(x.to("meta"), torch.tensor(500.0, device="meta"), encoder_hidden_states=meta["context"], **kwargs)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class UNetReference:
    """The default configuration's CFG UNet call: median seconds, its inputs and output (on the CPU)."""

    seconds: float
    x: torch.Tensor
    cond: dict[str, torch.Tensor]
    output: torch.Tensor


def bench_unet_step(model: LoadedModel, family: str, cfg: SuiteConfig, peak: float) -> tuple[dict[str, Any], UNetReference]:
    """One CFG UNet call (batch 2) through sdlab's UNetCall vs the bare diffusers module, alternating."""
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    x, cond = unet_inputs(model, family, device)
    t = torch.tensor([500.0, 500.0], device=device)
    call = UNetCall(model.unet, dtype)
    kwargs = {"added_cond_kwargs": {k: cond[k].to(dtype) for k in ("text_embeds", "time_ids")}} if "text_embeds" in cond else {}

    def sdlab() -> float:
        return timed(lambda: call(x, t, cond), device)[0]

    def plain() -> float:
        with torch.no_grad():
            return timed(lambda: model.unet(x.to(dtype), t, encoder_hidden_states=cond["context"].to(dtype),
                                            return_dict=False, **kwargs), device)[0]
    output = call(x, t, cond).cpu()  # also the warm-up (allocator, kernels)
    times = alternate({"sdlab": sdlab, "diffusers": plain}, cfg.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    reference = UNetReference(med["sdlab"], x.cpu(), {k: v.cpu() for k, v in cond.items()}, output)
    flops = unet_flops(model, x, cond)
    achieved = flops / med["sdlab"]
    return {"latent": list(x.shape), "seconds": times, "median": med, "sdlab_vs_diffusers": ratio(med["sdlab"], med["diffusers"]),
            "flops_per_step": flops, "achieved_flops_per_s": achieved, "fraction_of_matmul_peak": round(achieved / peak, 3)}, reference


def module_groups(model: LoadedModel) -> dict[str, list[torch.nn.Module]]:
    """The modules a whole image spends its time in, for ``ModuleClock``: UNet, text encoders, VAE decode."""
    return {"unet": [model.unet], "text": list(model.text_encoders), "vae": [model.vae.decoder, model.vae.post_quant_conv]}


def function_groups() -> dict[str, list[tuple[Any, str]]]:
    """sdlab decodes through ``lean_vae.lean_decode``, which calls no ``vae.decoder.forward``."""
    from sdlab.pipeline import lean_vae

    return {"vae": [(lean_vae, "lean_decode")]}


def bench_image(engine: Engine, model: LoadedModel, family: str, path: Path, pipe: Any, cfg: SuiteConfig) -> dict[str, Any]:
    """A whole image each way: wall time, time inside UNet / text encoders / VAE, the rest per step, peak RSS."""
    device = torch.device(cfg.device)
    size = SIZES[family] if model.vae_scale_factor == 8 else 64
    steps = cfg.steps[family]
    groups = module_groups(model)
    request = GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, steps=steps,
                                sampler="Euler", cfg_scale=7.0, seed=1, model=path.stem)
    results: dict[str, list[dict[str, float]]] = {"sdlab": [], "diffusers": []}
    calls = 0

    def measure(name: str, fn: Callable[[], Any]) -> float:
        nonlocal calls
        calls += 1
        clock = ModuleClock()
        with PeakRss() as rss, clock.watching(groups, device, function_groups()):
            seconds = timed(fn, device)[0]
        inside = sum(clock.seconds.values())
        results[name].append({"seconds": seconds, **{f"{k}_s": v for k, v in clock.seconds.items()},
                              "outside_per_step_s": (seconds - inside) / steps, "peak_rss": rss.peak,
                              "rss_before": rss.start})
        return seconds

    # a fresh prompt per round for both, so neither serves text from a cache
    rounds = iter(range(10**6))

    def sdlab() -> float:
        r = next(rounds)
        return measure("sdlab", lambda: engine.generate(request.replace(prompt=f"{PROMPT} {r}")))

    def plain() -> float:
        r = next(rounds)
        gen = torch.Generator(device="cpu").manual_seed(1)
        return measure("diffusers", lambda: pipe(f"{PROMPT} {r}", negative_prompt=NEGATIVE, height=size, width=size,
                                                  num_inference_steps=steps, guidance_scale=7.0, generator=gen))
    # unmeasured, one step each: the first image in a process pays oneDNN's kernel set-up and fresh memory
    # at this size (measured: 38 s against 25-27 s later), which would fall on whichever side runs first
    engine.generate(request.replace(prompt=f"{PROMPT} warm-up", steps=1))
    pipe(f"{PROMPT} warm-up", negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=1, guidance_scale=7.0)
    alternate({"sdlab": sdlab, "diffusers": plain}, cfg.repeats)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    step = med["sdlab"]["unet_s"] / steps
    weights_fp32 = sum(p.numel() for m in (model.unet, model.vae, *model.text_encoders) for p in m.parameters()) * 4
    return {"size": size, "steps": steps, "runs": results, "median": med,
            "sdlab_vs_diffusers": ratio(med["sdlab"]["seconds"], med["diffusers"]["seconds"]),
            "sdlab_outside_fraction_of_step": round(med["sdlab"]["outside_per_step_s"] / step, 4),
            "diffusers_outside_fraction_of_step": round(med["diffusers"]["outside_per_step_s"] / step, 4),
            "peak_rss_over_fp32_weights": round(med["sdlab"]["peak_rss"] / weights_fp32, 3),
            "fp32_weights_bytes": weights_fp32}


def bench_lora(model: LoadedModel, cfg: SuiteConfig) -> dict[str, Any]:
    """Apply / undo a kohya LoRA on UNet + CLIP with sdlab, vs the bare arithmetic of diffusers' fuse/unfuse."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_lora import write_lora

    from sdlab.models.adapters.apply import NetworkSpec, applied_networks, resolve_all
    from sdlab.models.adapters.lora_file import read_network

    path = write_lora(cfg.cache_dir / f"lora-r{cfg.lora_rank}-{Path(model.path).stem}.safetensors",
                      model.unet, model.text_encoders[0], cfg.lora_rank)
    comps = {"unet": model.unet, "text_encoder": model.text_encoders[0]}
    net = read_network(path)
    layers = [(comps[t.component].get_submodule(t.real_path), m) for t, m in resolve_all(comps, [NetworkSpec(net, 0.8)])[0].entries]
    backups: list[torch.Tensor] = []

    def sdlab() -> tuple[float, float]:
        ctx = applied_networks(comps, [NetworkSpec(net, 0.8)], family=model.family)
        return timed(ctx.__enter__, torch.device("cpu"))[0], timed(lambda: ctx.__exit__(None, None, None), torch.device("cpu"))[0]

    def fuse() -> None:
        with torch.no_grad():
            for layer, m in layers:
                up, down = m.parts["lora_up.weight"], m.parts["lora_down.weight"]
                backups.append(layer.weight.data.clone())
                w = layer.weight.data.reshape(layer.weight.shape[0], -1)
                w += 0.8 * float(m.parts["alpha"]) / down.shape[0] * (up.reshape(up.shape[0], -1).to(w.dtype) @ down.reshape(down.shape[0], -1).to(w.dtype))

    def unfuse() -> None:
        with torch.no_grad():
            for (layer, _), b in zip(layers, backups, strict=True):
                layer.weight.data.copy_(b)
        backups.clear()

    rows = []
    for _ in range(cfg.repeats):
        apply_s, undo_s = sdlab()
        rows.append({"sdlab_apply_s": apply_s, "sdlab_undo_s": undo_s, "fuse_reference_s": timed(fuse, torch.device("cpu"))[0],
                     "unfuse_reference_s": timed(unfuse, torch.device("cpu"))[0]})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"rank": cfg.lora_rank, "layers": len(layers), "runs": rows, "median": med,
            "apply_vs_reference": ratio(med["sdlab_apply_s"], med["fuse_reference_s"]),
            "undo_vs_reference": ratio(med["sdlab_undo_s"], med["unfuse_reference_s"])}


VARIANTS: dict[str, tuple[str | None, PerfSettings]] = {
    "channels_last": (None, PerfSettings(channels_last=True)),
    "sliced": (None, PerfSettings(attention="sliced")),
    "classic": (None, PerfSettings(attention="classic")),
    "bf16": ("bf16", PerfSettings()),
    "fp16": ("fp16", PerfSettings()),
    "compile": (None, PerfSettings(compile_unet=True)),
}


def bench_variants(path: Path, family: str, cfg: SuiteConfig, reference: UNetReference) -> dict[str, Any]:
    """One CFG UNet call per sdlab configuration (its own Engine, loaded one at a time): seconds (best of
    ``repeats`` after a warm-up, whose time is reported as ``first_call_s``: the compile time for ``compile``),
    speed-up over the default, and the max abs difference of the UNet output from the default's."""
    device = torch.device(cfg.device)
    out: dict[str, Any] = {}
    for name in cfg.variants:
        dtype_name, perf = VARIANTS[name]
        engine = Engine(cfg.cache_dir, cfg.device, dtype_name or cfg.dtype, perf=perf)
        model = engine.load(path.stem)
        x, cond = reference.x.to(device), {k: v.to(device) for k, v in reference.cond.items()}
        call = UNetCall(model.unet, engine.dtype)
        t = torch.tensor([500.0, 500.0], device=device)
        first, result = timed(lambda: call(x, t, cond), device)
        best = min(timed(lambda: call(x, t, cond), device)[0] for _ in range(cfg.repeats))
        out[name] = {"first_call_s": first, "seconds": best, "speedup": round(reference.seconds / best, 3),
                     "max_abs_diff": float((result.cpu() - reference.output).abs().max()),
                     "output_std": float(reference.output.std())}
        print(f"[{family}] variant {name}: {out[name]}", flush=True)
        del engine, model, call
        gc.collect()
    return out


def bench_vae_tiling(model: LoadedModel, cfg: SuiteConfig, pixels: int) -> dict[str, Any]:
    """Peak RSS and seconds of one VAE decode at ``pixels`` square, untiled vs tiled (512-pixel tiles)."""
    from sdlab.pipeline.decode import decode_latent
    from sdlab.pipeline.perf import configure_vae

    device = torch.device(cfg.device)
    h = pixels // model.vae_scale_factor
    latent = torch.randn(model.latent_channels, h, h, generator=torch.Generator().manual_seed(0)).to(device)
    out: dict[str, Any] = {"pixels": pixels}
    images = {}
    for name, tiled in (("untiled", False), ("tiled_512", True)):
        configure_vae(model.vae, PerfSettings(vae_tiling=tiled, vae_tile_size=512), model.vae_scale_factor)
        gc.collect()
        with PeakRss() as rss:
            seconds, images[name] = timed(lambda: decode_latent(model.vae, latent, model.latent_scaling_factor), device)
        out[name] = {"seconds": seconds, "peak_rss_increase": rss.peak - rss.start}
        model.vae.disable_tiling()
    out["max_abs_diff"] = float((images["tiled_512"] - images["untiled"]).abs().max())
    return out


def bench_family(family: str, cfg: SuiteConfig, peak: float) -> dict[str, Any]:
    device = torch.device(cfg.device)
    t0 = time.perf_counter()
    path = build_checkpoint(family, cfg.cache_dir, cfg.smoke)
    out: dict[str, Any] = {"checkpoint": str(path), "build_s": time.perf_counter() - t0}
    engine = Engine(cfg.cache_dir, cfg.device, cfg.dtype, perf=PerfSettings())
    model = engine.load(path.stem)
    config_dir = diffusers_config_dir(model, family, cfg.cache_dir)
    out["weights_bytes"] = model_bytes(model)
    engine._models.clear()  # free it for the load comparison: at most one extra copy at a time
    del model
    gc.collect()
    print(f"[{family}] load ...", flush=True)
    out["load"] = bench_load(path, family, config_dir, cfg)
    gc.collect()
    model = engine.load(path.stem)
    print(f"[{family}] unet step ...", flush=True)
    out["unet_step"], reference = bench_unet_step(model, family, cfg, peak)
    pipe = shared_pipeline(model, family, config_dir)
    print(f"[{family}] whole image ...", flush=True)
    out["image"] = bench_image(engine, model, family, path, pipe, cfg)
    if family == "sd1" and cfg.lora_rank:
        print(f"[{family}] lora ...", flush=True)
        out["lora"] = bench_lora(model, cfg)
    if cfg.vae_tiling_pixels:
        print(f"[{family}] vae tiling ...", flush=True)
        out["vae_tiling"] = bench_vae_tiling(model, cfg, cfg.vae_tiling_pixels)
    del pipe, model
    engine._models.clear()
    gc.collect()
    if cfg.variants:
        out["variants"] = bench_variants(path, family, cfg, reference)
    return out


# ------------------------------------------------------------------------------------------------ report

def markdown(report: dict[str, Any]) -> str:
    """A short table of the figures (sdlab, diffusers, ratio)."""
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, torch {m['torch']}, diffusers "
             f"{m['diffusers']}; device {m['device']}, dtype {report['dtype']}; load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}. Matmul peak: {report['matmul_peak_gflops']:.0f} GFLOP/s.",
             "", "| family | measure | sdlab | diffusers | sdlab / diffusers |", "|---|---|---|---|---|"]
    for family, r in report["families"].items():
        ld, st, im = r["load"], r["unet_step"], r["image"]
        rows = [
            ("checkpoint load (s)", ld["median"]["sdlab"], ld["median"]["diffusers"], ld["sdlab_vs_diffusers"]),
            ("  fastest of the load rounds (s)", ld["min"]["sdlab"], ld["min"]["diffusers"], ratio(ld["min"]["sdlab"], ld["min"]["diffusers"])),
            (f"  raw file read (s) / sdlab vs raw (file {'+'.join(ld['file_dtypes'])})", ld["median"]["raw_read"], None, ld["sdlab_vs_raw_read"]),
            ("  first load of a file, with its SHA-256 (s)", ld["median"]["sdlab_hashing"], None, None),
            (f"UNet step, CFG, latent {st['latent'][2]}x{st['latent'][3]} (s)", st["median"]["sdlab"], st["median"]["diffusers"], st["sdlab_vs_diffusers"]),
            (f"  FLOPs/step {st['flops_per_step'] / 1e12:.2f} T; achieved GFLOP/s / fraction of matmul peak",
             st["achieved_flops_per_s"] / 1e9, None, st["fraction_of_matmul_peak"]),
            (f"whole image {im['size']}px, {im['steps']} steps (s)", im["median"]["sdlab"]["seconds"], im["median"]["diffusers"]["seconds"], im["sdlab_vs_diffusers"]),
            ("  text encoding (s)", im["median"]["sdlab"]["text_s"], im["median"]["diffusers"]["text_s"], None),
            ("  VAE decode (s)", im["median"]["sdlab"]["vae_s"], im["median"]["diffusers"]["vae_s"], None),
            ("  outside UNet/TE/VAE per step (s) / sdlab fraction of a step", im["median"]["sdlab"]["outside_per_step_s"],
             im["median"]["diffusers"]["outside_per_step_s"], im["sdlab_outside_fraction_of_step"]),
            ("  peak RSS (GB) / sdlab over fp32 weights", im["median"]["sdlab"]["peak_rss"] / 1e9,
             im["median"]["diffusers"]["peak_rss"] / 1e9, im["peak_rss_over_fp32_weights"]),
        ]
        if "lora" in r:
            lo = r["lora"]
            rows += [(f"LoRA r{lo['rank']} apply (s) vs fuse arithmetic", lo["median"]["sdlab_apply_s"], lo["median"]["fuse_reference_s"], lo["apply_vs_reference"]),
                     ("LoRA undo (s) vs unfuse copy", lo["median"]["sdlab_undo_s"], lo["median"]["unfuse_reference_s"], lo["undo_vs_reference"])]
        for name, v in r.get("variants", {}).items():
            rows.append((f"UNet step, sdlab {name} (s; last column: speed-up over sdlab default; first call {v['first_call_s']:.3g} s, max abs diff {v['max_abs_diff']:.2g})",
                         v["seconds"], None, v["speedup"]))
        if "vae_tiling" in r:
            vt = r["vae_tiling"]
            rows += [(f"VAE decode {vt['pixels']}px peak RSS increase (GB): untiled / tiled 512", vt["untiled"]["peak_rss_increase"] / 1e9,
                      None, vt["tiled_512"]["peak_rss_increase"] / 1e9),
                     (f"  seconds untiled / tiled (max abs diff {vt['max_abs_diff']:.3f})", vt["untiled"]["seconds"], None, vt["tiled_512"]["seconds"])]
        for name, a, b, q in rows:
            fmt = (lambda v: "" if v is None else f"{v:.3g}")
            lines.append(f"| {family} | {name} | {fmt(a)} | {fmt(b)} | {fmt(q)} |")
    return "\n".join(lines) + "\n"


def variants(text: str | None, quick: bool) -> tuple[str, ...]:
    """The ``--variants`` names, validated."""
    names = tuple(n for n in (text.split(",") if text is not None else ([] if quick else ["channels_last", "sliced", "bf16"])) if n)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="SD1.5 only, 2 steps, one round (about 10 min on 2 CPU cores)")
    parser.add_argument("--smoke", action="store_true", help="tiny checkpoints: checks the suite runs (seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPES))
    parser.add_argument("--families", default=None, help="comma-separated: sd1,sdxl (default: sd1 with --quick, else both)")
    parser.add_argument("--steps", type=int, default=None, help="steps per whole image (default: 2 quick; sd1 10, sdxl 2)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating rounds per measurement (1 quick, 2 full)")
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--vae-tiling-pixels", type=int, default=None,
                        help="also decode a square image this large untiled vs tiled (default: 1024 full, 0 quick)")
    parser.add_argument("--variants", default=None,
                        help=f"sdlab configurations timed per UNet step, comma-separated from {','.join(VARIANTS)} "
                             "(default: channels_last,sliced,bf16 full, none quick)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("SDLAB_BENCH_CACHE", Path.home() / ".cache" / "sdlab-bench")))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    families = tuple(args.families.split(",")) if args.families else (("sd1",) if args.quick else ("sd1", "sdxl"))
    quick = args.quick or args.smoke
    steps = {"sd1": args.steps or (2 if quick else 10), "sdxl": args.steps or (1 if quick else 2)}
    cfg = SuiteConfig(args.device, args.dtype, families, steps, args.repeats or (1 if quick else 2),
                      args.lora_rank if args.lora_rank is not None else (32 if quick else 128), args.cache_dir, args.smoke,
                      args.vae_tiling_pixels if args.vae_tiling_pixels is not None else (0 if quick else 1024),
                      variants(args.variants, quick))
    device = torch.device(cfg.device)
    report: dict[str, Any] = {"command": " ".join(["benchmarks/suite.py", *(argv if argv is not None else sys.argv[1:])]),
                              "machine": machine(device), "dtype": cfg.dtype, "families": {}}
    peak = matmul_peak(device, DTYPES[cfg.dtype], n=256 if cfg.smoke else 2048)
    report["matmul_peak_gflops"] = peak / 1e9
    for family in families:
        report["families"][family] = bench_family(family, cfg, peak)
    tag = f"{'smoke' if cfg.smoke else 'quick' if args.quick else 'full'}-{device.type}-{cfg.dtype}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"suite-{tag}.json").write_text(json.dumps(report, indent=1, default=str))
    table = markdown(report)
    (args.out_dir / f"suite-{tag}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
