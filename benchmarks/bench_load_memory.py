"""Where a checkpoint load's time goes on this machine: reading the file vs touching fresh memory.

A load must put every weight into memory the process has not used before, so its floor is not the time
to read the file (which can reuse one buffer) but the time to read it *into new memory*. This script
measures, in one process and in this order: one raw read of the file (page cache warm, one reused
64 MB buffer), a first touch of as many fresh bytes as the file holds (``torch.empty`` + ``fill_``, and
an anonymous mmap advised ``MADV_HUGEPAGE``), then ``load_checkpoint`` in the file's own dtype (no
cast) ``--rounds`` times, after importing the model classes (timed apart): the first load meets fresh
memory, later ones reuse pages freed before.

    .venv/bin/python benchmarks/bench_load_memory.py [--checkpoint FILE] [--rounds 3]

Default file: the random SD1.5 checkpoint of ``make bench`` (~/.cache/sdlab-bench). Prints one line
per measure (seconds, and GB/s where it applies).
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
import time
from pathlib import Path

import torch

from sdlab.models.files import read_safetensors_header
from sdlab.models.load import load_checkpoint

DEFAULT = Path.home() / ".cache/sdlab-bench/Stable-diffusion/random-sd1.safetensors"
CHUNK = 64 << 20


def raw_read(path: Path) -> float:
    """Seconds to read ``path`` once into one reused buffer."""
    buf = bytearray(CHUNK)
    start = time.perf_counter()
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass
    return time.perf_counter() - start


def touch_torch(nbytes: int) -> float:
    """Seconds to allocate and first-write ``nbytes`` with torch's CPU allocator."""
    start = time.perf_counter()
    block = torch.empty(nbytes, dtype=torch.uint8)
    block.fill_(1)
    seconds = time.perf_counter() - start
    del block
    return seconds


def touch_hugepages(nbytes: int) -> float:
    """Seconds to first-write ``nbytes`` of an anonymous mapping advised MADV_HUGEPAGE."""
    start = time.perf_counter()
    region = mmap.mmap(-1, nbytes)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)
    view = torch.frombuffer(region, dtype=torch.uint8)
    view.fill_(1)
    seconds = time.perf_counter() - start
    del view
    region.close()
    return seconds


def file_dtype(path: Path) -> torch.dtype:
    """The dtype holding most of the file's bytes."""
    sizes: dict[str, int] = {}
    for info in read_safetensors_header(path).tensors:
        itemsize = getattr(torch, info.dtype).itemsize
        sizes[info.dtype] = sizes.get(info.dtype, 0) + math.prod(info.shape) * itemsize
    return getattr(torch, max(sizes, key=sizes.__getitem__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    path, nbytes = args.checkpoint, args.checkpoint.stat().st_size
    gb = nbytes / 1e9
    raw_read(path)  # warm the page cache
    dtype = file_dtype(path)
    print(f"file {path.name}: {gb:.2f} GB, {dtype}; {os.cpu_count()} cores, torch {torch.__version__}")
    seconds = raw_read(path)
    print(f"raw read (page cache, reused buffer)   {seconds:7.3f} s  {gb / seconds:6.1f} GB/s")
    seconds = touch_torch(nbytes)
    print(f"fresh memory, torch.empty + fill       {seconds:7.3f} s  {gb / seconds:6.1f} GB/s")
    seconds = touch_hugepages(nbytes)
    print(f"fresh memory, MADV_HUGEPAGE mmap       {seconds:7.3f} s  {gb / seconds:6.1f} GB/s")
    start = time.perf_counter()
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401  (first use pays the imports)
    from transformers import CLIPTextModel  # noqa: F401
    print(f"imports of the model classes            {time.perf_counter() - start:7.3f} s")
    for k in range(args.rounds):
        start = time.perf_counter()
        model = load_checkpoint(path, dtype=dtype)
        seconds = time.perf_counter() - start
        del model
        print(f"load_checkpoint({dtype}), round {k + 1}      {seconds:7.3f} s  {gb / seconds:6.1f} GB/s")


if __name__ == "__main__":
    main()
