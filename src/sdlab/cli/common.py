"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdlab.engine import Engine
    from sdlab.pipeline.perf import PerfSettings


@dataclass(frozen=True)
class Command:
    """One sub-command: how to declare its arguments and how to run it (returns an exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5G"`` or a plain number -> bytes (binary units)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    try:
        return int(float(value[: len(value) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 8G, 512M)") from None


def _slice_size(text: str) -> int | str:
    return text if text in ("auto", "max") else int(text)


def add_perf_arguments(parser: argparse.ArgumentParser) -> None:
    """Global performance / memory options (see :mod:`sdlab.pipeline.perf`)."""
    group = parser.add_argument_group("performance and memory")
    group.add_argument("--attention", default="sdpa", choices=("sdpa", "sliced", "classic"),
                       help="attention kernel: sdpa (default), sliced (less memory, slower), classic")
    group.add_argument("--attention-slice-size", type=_slice_size, default="auto", help="slice size for --attention sliced")
    group.add_argument("--channels-last", action="store_true", help="UNet/VAE weights in channels-last memory format")
    group.add_argument("--vae-dtype", default="auto", choices=("auto", "fp32", "model"),
                       help="auto: fp32 VAE for SDXL in fp16 (NaN guard); fp32: always (A1111 --no-half-vae); model")
    group.add_argument("--no-half-vae", dest="vae_dtype", action="store_const", const="fp32", help="same as --vae-dtype fp32")
    group.add_argument("--vae-slicing", action="store_true", help="VAE encodes one image of a batch at a time")
    group.add_argument("--vae-tiling", action="store_true", help="decode in tiles (bounded memory for large images)")
    group.add_argument("--vae-tile-size", type=int, default=512, help="tile size in pixels for --vae-tiling (default 512)")
    group.add_argument("--offload", default="none", choices=("none", "model", "sequential"), help="CPU offload (GPU only)")
    group.add_argument("--compile", action="store_true", help="torch.compile the UNet (compile time in timings)")
    group.add_argument("--cache-bytes", type=parse_bytes, default=None, help="model cache bound, e.g. 12G (LRU)")
    group.add_argument("--no-hash-cache", action="store_true",
                       help="do not keep file hashes in <models-dir>/.sdlab-hashes.json between runs")
    group.add_argument("--max-models", type=int, default=1, help="models kept loaded between requests (default 1)")


def perf_settings(args: argparse.Namespace) -> PerfSettings:
    """PerfSettings from the global options."""
    from sdlab.pipeline.perf import PerfSettings

    return PerfSettings(
        attention=args.attention, attention_slice_size=args.attention_slice_size, channels_last=args.channels_last,
        vae_dtype=args.vae_dtype, vae_slicing=args.vae_slicing, vae_tiling=args.vae_tiling,
        vae_tile_size=args.vae_tile_size, offload=args.offload, compile_unet=args.compile,
        max_cache_bytes=args.cache_bytes,
    )


def make_engine(args: argparse.Namespace) -> Engine:
    """An Engine from the global options (--models-dir, --device, --dtype and the performance options)."""
    from sdlab.engine import Engine

    models_dir = Path(args.models_dir) if args.models_dir else None
    if not hasattr(args, "attention"):  # a parser without the performance group
        return Engine(models_dir=models_dir, device=args.device, dtype=args.dtype, persist_hashes=True)
    return Engine(models_dir=models_dir, device=args.device, dtype=args.dtype, perf=perf_settings(args),
                  max_models=args.max_models, persist_hashes=not args.no_hash_cache)
