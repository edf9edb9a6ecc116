"""How A1111 emphasis ``(colour:w)`` moves the default model's images (issue #3, item 4).

For each colour word and weight, generates seeds 100..107 (Euler a, 20 steps, CFG 7, 64x64, through
sdlab.Engine) of a shape-colour prompt and a background-colour prompt and prints, per weight, the mean
fraction of pixels within 60 RGB units of the colour (as tests/pipeline/test_default_model_features.py
measures it), how many images the analyser reads as that colour, and for the issue's pair how many
seeds have more of the colour at w = 1.4 than at 0.6.

    .venv/bin/python benchmarks/eval_emphasis.py                       # the packaged checkpoint
    .venv/bin/python benchmarks/eval_emphasis.py --checkpoint /work/train5/export.safetensors
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdlab.engine import Engine
from sdlab.toyworld import COLOURS, analyse
from sdlab.types import GenerationRequest

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "src/sdlab/data/default_model/toyworld-64.safetensors"
PROMPTS = {"colour": "a ({c}:{w}) circle on a white background", "background": "({c}:{w}) background, a small white square"}
WEIGHTS = (0.0, 0.2, 0.6, 1.0, 1.4, 1.8)
SEED, BATCH = 100, 8


def colour_area(image: Image.Image, name: str, radius: float = 60.0) -> float:
    """Fraction (0..1) of pixels within ``radius`` (RGB Euclidean, 0..255 units) of palette colour ``name``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    return float((np.linalg.norm(pixels - np.asarray(COLOURS.get(name).rgb, dtype=np.float64), axis=2) < radius).mean())


def batch(engine: Engine, model: str, prompt: str) -> list[Image.Image]:
    request = GenerationRequest(prompt=prompt, model=model, seed=SEED, batch_size=BATCH, sampler="Euler a",
                                steps=20, cfg_scale=7.0, width=64, height=64)
    return [image.image for image in engine.generate(request).images]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="single-file checkpoint")
    ap.add_argument("--colours", default="red,blue,green", help="comma-separated colour words")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("EVAL_THREADS", "1")))
    engine = Engine(models_dir=tempfile.mkdtemp(prefix="sdlab-emphasis-"), device="cpu", dtype="fp32")
    for attribute, template in PROMPTS.items():
        for colour in args.colours.split(","):
            areas, reads = {}, {}
            for w in WEIGHTS:
                images = batch(engine, str(args.checkpoint), template.format(c=colour, w=w))
                areas[w] = [colour_area(im, colour) for im in images]
                reads[w] = sum(getattr(analyse(im), attribute) == colour for im in images)
            grew = sum(b > a for a, b in zip(areas[0.6], areas[1.4], strict=True))
            cells = "  ".join(f"{w:g}: {np.mean(areas[w]):.3f} ({reads[w]}/{BATCH})" for w in WEIGHTS)
            print(f"{attribute:<10} {colour:<7} {cells}   0.6->1.4 grew {grew}/{BATCH}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
