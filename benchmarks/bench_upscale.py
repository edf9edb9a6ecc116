"""Peak memory (RSS) and time of a tiled vs untiled model upscale of a 2048x2048 image.

Each configuration runs in a fresh Python process (peak RSS = ``ru_maxrss`` of that process), with a
random-weight Real-ESRGAN compact (SRVGG) x4 model saved into a temporary models folder, so the
numbers measure sdlab's tiling, not a particular checkpoint. Not a test; run by hand:

    .venv/bin/python benchmarks/bench_upscale.py [--size 2048] [--feat 16] [--conv 4] [--tiles 192,512,0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
from sdlab.post.upscale import load_upscaler, resolve_upscaler
from sdlab.models.paths import ModelsDir
root, size, tile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_grad_enabled(False)
img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
up = load_upscaler(resolve_upscaler(ModelsDir(__import__("pathlib").Path(root)), "bench_compact"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = up.upscale(img, 4, tile=tile)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tile": tile, "out": list(out.size), "seconds": round(seconds, 1),
                  "rss_before_mib": before // 1024, "peak_rss_mib": peak // 1024}))
"""


def _make_model(root: Path, feat: int, conv: int) -> None:
    import torch

    from sdlab.post.spandrel_compat import import_spandrel

    import_spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    (root / "RealESRGAN").mkdir(parents=True)
    torch.save(Compact(num_feat=feat, num_conv=conv, upscale=4).state_dict(), root / "RealESRGAN" / "bench_compact.pth")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="input side in px (default 2048)")
    ap.add_argument("--feat", type=int, default=16, help="SRVGG features (realesr-general-x4v3: 64)")
    ap.add_argument("--conv", type=int, default=4, help="SRVGG body convolutions (realesr-general-x4v3: 32)")
    ap.add_argument("--tiles", default="192,512,0", help="comma-separated tile sizes; 0 = untiled")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _make_model(Path(tmp), args.feat, args.conv)
        print(f"# {args.size}x{args.size} -> x4, SRVGG feat={args.feat} conv={args.conv}, torch threads default")
        for tile in (int(t) for t in args.tiles.split(",")):
            done = subprocess.run([sys.executable, "-c", CHILD, tmp, str(args.size), str(tile)],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                print(json.dumps({"tile": tile, "error": done.stderr.strip().splitlines()[-1:]}))
            else:
                print(done.stdout.strip())


if __name__ == "__main__":
    main()
