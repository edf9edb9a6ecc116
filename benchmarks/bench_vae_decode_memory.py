"""Peak memory and time of one VAE decode: diffusers' ``AutoencoderKL.decode`` against sdlab's lean
decode (``sdlab.pipeline.lean_vae``), each in a fresh process so that the peaks do not share a heap.

Random full-size SD1.5 VAE (default init, seeded), float32 unless ``--dtype``, one latent of ``--pixels / 8``.
The peak is RSS sampled every 2 ms over the decode, minus RSS just before it (the weights are loaded).
Also printed: max abs difference of the outputs and how many 8-bit values differ (A1111's conversion).

    .venv/bin/python benchmarks/bench_vae_decode_memory.py --pixels 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODES = ("diffusers", "lean")


def build_vae(dtype: str):  # noqa: ANN201 - the diffusers class is imported lazily
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), norm_num_groups=32, sample_size=512,
    )
    if dtype != "float32":
        vae = vae.to(getattr(torch, dtype))
    return vae.eval().requires_grad_(False)


def child(mode: str, pixels: int, dtype: str, out: Path) -> None:
    """Decode once in this process; write the output tensor and the figures to ``out``."""
    import psutil
    import torch

    from sdlab.pipeline.lean_vae import lean_decode

    vae = build_vae(dtype)
    z = torch.randn(1, 4, pixels // 8, pixels // 8, generator=torch.Generator().manual_seed(1)).to(vae.dtype)
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    before = proc.memory_info().rss
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    start = time.perf_counter()
    with torch.inference_mode():
        image = lean_decode(vae, z) if mode == "lean" else vae.decode(z, return_dict=False)[0]
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    torch.save(image, out.with_suffix(".pt"))
    out.write_text(json.dumps({"mode": mode, "seconds": seconds, "rss_before": before,
                               "peak_increase": max(peak[0], proc.memory_info().rss) - before}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=512, help="image side (multiple of 8)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds per mode")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.pixels, args.dtype, args.out)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[dict]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            for mode in MODES:
                out = Path(tmp) / f"{mode}-{r}.json"
                subprocess.run([sys.executable, __file__, "--child", mode, "--pixels", str(args.pixels),
                                "--dtype", args.dtype, "--out", str(out)], check=True)
                results[mode].append(json.loads(out.read_text()))
        a, b = (torch.load(Path(tmp) / f"{m}-0.pt").float() for m in MODES)
    to8 = lambda x: (255.0 * torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)).to(torch.uint8)  # noqa: E731
    print(f"VAE decode {args.pixels}x{args.pixels}, SD1.5 VAE, {args.dtype}, {args.rounds} round(s), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for mode, runs in results.items():
        peak = min(x["peak_increase"] for x in runs) / 1e9
        secs = min(x["seconds"] for x in runs)
        print(f"  {mode:10s} peak RSS increase {peak:.3f} GB   {secs:.2f} s   (RSS before {runs[0]['rss_before'] / 1e9:.2f} GB)")
    print(f"  max abs difference {float((a - b).abs().max()):.3g}; 8-bit values differing "
          f"{int((to8(a) != to8(b)).sum())} of {a.numel()}")


if __name__ == "__main__":
    main()
