"""Machine facts and measurement tools of the benchmark suite (benchmarks/suite.py): peak RSS sampling,
time inside module groups, alternating runs, the matmul FLOP/s peak."""

from __future__ import annotations

import gc
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch


# ---------------------------------------------------------------------------------------------- machine

def machine(device: torch.device) -> dict[str, Any]:
    """CPU / GPU / memory / library versions of this machine."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "load_avg_at_start": os.getloadavg(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    import diffusers
    import transformers

    info |= {"diffusers": diffusers.__version__, "transformers": transformers.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an ``n`` x ``n`` matmul in ``dtype`` (the machine's practical peak)."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# ----------------------------------------------------------------------------------------- measurement

class PeakRss:
    """Peak resident set size (bytes) of this process while the ``with`` block runs (10 ms sampling)."""

    def __init__(self) -> None:
        self.proc, self.peak, self.start = psutil.Process(), 0, 0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


@dataclass
class ModuleClock:
    """Seconds spent inside groups of modules (forward hooks), e.g. ``{"unet": [unet]}``, and of
    functions (``(owner, attribute)`` wrapped while watching). Nested calls in one group count once."""

    seconds: dict[str, float] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)

    @contextmanager
    def watching(self, groups: dict[str, list[torch.nn.Module]], device: torch.device,
                 functions: dict[str, list[tuple[Any, str]]] | None = None) -> Iterator[ModuleClock]:
        depth: dict[str, int] = {}
        starts: dict[str, float] = {}
        self.seconds = dict.fromkeys([*groups, *(functions or {})], 0.0)

        def enter(name: str) -> None:
            depth[name] = depth.get(name, 0) + 1
            if depth[name] == 1:
                sync(device)
                starts[name] = time.perf_counter()

        def leave(name: str) -> None:
            depth[name] -= 1
            if depth[name] == 0:
                sync(device)
                self.seconds[name] += time.perf_counter() - starts.pop(name)

        for name, modules in groups.items():
            for module in modules:
                self._handles += [module.register_forward_pre_hook(lambda m, a, _n=name: enter(_n)),
                                  module.register_forward_hook(lambda m, a, o, _n=name: leave(_n))]
        patched = [(name, owner, attr, getattr(owner, attr))
                   for name, targets in (functions or {}).items() for owner, attr in targets]
        for name, owner, attr, fn in patched:
            def wrapper(*args: Any, _fn: Callable[..., Any] = fn, _n: str = name, **kwargs: Any) -> Any:
                enter(_n)
                try:
                    return _fn(*args, **kwargs)
                finally:
                    leave(_n)
            setattr(owner, attr, wrapper)
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            for _, owner, attr, fn in patched:
                setattr(owner, attr, fn)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def alternate(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each run in turn, ``repeats`` rounds (A B A B ...); lists of their returned seconds."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            out[name].append(run())
            gc.collect()
    return out


def ratio(sdlab: float, diffusers: float) -> float | None:
    return round(sdlab / diffusers, 3) if diffusers else None
