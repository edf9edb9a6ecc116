"""Prompt adherence of the bundled default model on held-out toy-world prompts (``make eval``).

Generates one 64x64 image per prompt of a fixed prompt set (held-out colour+shape pairs, held-out
phrasings, and new attribute combinations of seen pairs), classifies each with the deterministic
analyser (sdlab.toyworld.analyse) and prints adherence per attribute and overall for three settings:
20 steps Euler a CFG 7 (targets: colour >= 90%, background >= 90%, position >= 80%, shape >= 75%),
5 steps CFG 7, and 20 steps CFG 1 (no guidance).

    .venv/bin/python benchmarks/eval_default_model.py                 # the packaged checkpoint, sdlab.Engine
    .venv/bin/python benchmarks/eval_default_model.py --snapshot /work/train/ema_latest.pt --limit 24
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sdlab.toyworld import (
    HELD_OUT_PAIRS,
    HELD_OUT_PHRASINGS,
    POSITIONS,
    SIZES,
    TRAIN_PHRASINGS,
    Scene,
    analyse,
    article,
    caption,
    matches,
    parse_caption,
    random_scene,
)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "src/sdlab/data/default_model/toyworld-64.safetensors"
SCORED = ("colour", "background", "shape", "position")
TARGETS = {"colour": 90.0, "background": 90.0, "shape": 75.0, "position": 80.0}
SETTINGS = ((20, 7.0), (5, 7.0), (20, 1.0))


GROUPS = ("held-out pair", "seen pair", "held-out phrasing")
"""Prompt groups: held-out colour+shape pairs (training phrasings); seen pairs in new attribute
combinations (training phrasings); seen pairs in phrasings never used in training."""


INDEPENDENT_PHRASINGS: tuple[str, ...] = (
    "draw {a} {colour} {shape} {where}; make the background {bg}",
    "{bg}-coloured background. {size} {colour} {shape}. placed {where}.",
    "{colour} {shape} ({size}) {where} against {abg} {bg} background",
    "background: {bg}. object: {a} {size} {colour} {shape}, {where}",
)
"""Phrasings in none of training (captions, clause or free captions: sdlab.toyworld.RESERVED_WORDS) and
not in the evaluation's prompt set either, first written for the note of 2026-12-03. ``(small)`` is
emphasis syntax, as a user would type it."""


@dataclass(frozen=True)
class Case:
    """One evaluation prompt, its seed, its group and, where the prompt cannot be parsed back (some
    independent phrasings name no size), the scene it describes."""

    prompt: str
    seed: int
    group: str
    scene: Scene | None = None


def prompt_set(n_held_out: int = 36, n_seen: int = 12, n_phrasing: int = 12) -> tuple[Case, ...]:
    """The fixed evaluation prompts (deterministic): ``n_held_out`` + ``n_seen`` + ``n_phrasing``."""
    rng = np.random.default_rng(4242)
    pairs = sorted(HELD_OUT_PAIRS)
    cases = []
    for i in range(n_held_out):
        colour, shape = pairs[i % len(pairs)]
        base = random_scene(rng, allow_held_out=True)
        bg = base.background if base.background != colour else "black" if colour != "black" else "white"
        scene = Scene(shape, colour, bg, base.position, base.size)
        cases.append(Case(caption(scene, i % len(TRAIN_PHRASINGS), rng), 1000 + i, GROUPS[0]))
    for i in range(n_seen):
        scene = random_scene(rng)
        cases.append(Case(caption(scene, i % len(TRAIN_PHRASINGS), rng), 2000 + i, GROUPS[1]))
    for i in range(n_phrasing):
        scene = random_scene(rng)
        phrasing = len(TRAIN_PHRASINGS) + i % len(HELD_OUT_PHRASINGS)
        cases.append(Case(caption(scene, phrasing, rng), 3000 + i, GROUPS[2]))
    return tuple(cases)


def independent_set(n: int = 24) -> tuple[Case, ...]:
    """``n`` random scenes (held-out pairs allowed), each in one INDEPENDENT_PHRASINGS template in turn."""
    rng = np.random.default_rng(777)
    cases = []
    for i in range(n):
        scene = random_scene(rng, allow_held_out=True)
        template = INDEPENDENT_PHRASINGS[i % len(INDEPENDENT_PHRASINGS)]
        size = SIZES.get(scene.size).words[0]
        after_a = size if "{a} {size}" in template else scene.colour
        text = template.format(a=article(after_a), size=size, colour=scene.colour, shape=scene.shape,
                               bg=scene.background, abg=article(scene.background),
                               where=POSITIONS.get(scene.position).phrases[0])
        cases.append(Case(text, 4000 + i, "independent phrasing", scene))
    return tuple(cases)


def load_modules(checkpoint: Path | None, snapshot: Path | None) -> tuple[torch.nn.Module, ...]:
    """(unet, vae, text encoder) from a single-file checkpoint (through sdlab.models) or a snapshot."""
    if snapshot is not None:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
        from train_export import modules_from_snapshot

        return modules_from_snapshot(snapshot)[1:]
    from sdlab.models.load import load_checkpoint

    m = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    return m.unet, m.vae, m.text_encoders[0]


def engine_generate(checkpoint: Path | None, dtype: str = "fp32") -> Callable[[str, int, int, float], Image.Image]:
    """``generate(prompt, seed, steps, cfg) -> PIL.Image``: sdlab's Engine in ``dtype``, Euler a, 64x64,
    A1111 semantics."""
    import tempfile

    from sdlab.engine import Engine
    from sdlab.types import GenerationRequest

    engine = Engine(models_dir=tempfile.mkdtemp(prefix="sdlab-eval-"), device="cpu", dtype=dtype)
    model = str(checkpoint or DEFAULT_CHECKPOINT)

    def generate(prompt: str, seed: int, steps: int, cfg: float) -> Image.Image:
        req = GenerationRequest(prompt=prompt, model=model, sampler="Euler a", steps=steps, cfg_scale=cfg,
                                seed=seed, width=64, height=64)
        return engine.generate(req).images[0].image

    return generate


def diffusers_generate(unet, vae, text) -> Callable[[str, int, int, float], Image.Image]:
    """``generate(prompt, seed, steps, cfg) -> PIL.Image`` through diffusers (training snapshots).

    diffusers' StableDiffusionPipeline built in memory (offline, no safety checker) with Euler a over
    SD1's schedule (linspace timesteps, as A1111's default). Not seed-identical to A1111 / the Engine
    (different noise draws); use it only to follow training.
    """
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from sdlab.prompt.tokenizer import ClipTokenizer

    tok = ClipTokenizer.bundled("clip")
    sched = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="linspace", steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=sched, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def embed(prompt: str) -> torch.Tensor:
        row = [tok.bos_id, *tok.encode(prompt)[:75], tok.eos_id]
        return text(torch.tensor([row + [tok.eos_id] * (77 - len(row))])).last_hidden_state

    def generate(prompt: str, seed: int, steps: int, cfg: float) -> Image.Image:
        gen = torch.Generator("cpu").manual_seed(seed)
        return pipe(prompt_embeds=embed(prompt), negative_prompt_embeds=embed(""), height=64, width=64,
                    num_inference_steps=steps, guidance_scale=cfg, generator=gen).images[0]

    return generate


def score(generate, cases: tuple[Case, ...], steps: int, cfg: float) -> tuple[dict[str, dict[str, float]], list]:
    """Adherence percentages per group (and ``"all prompts"``): each attribute, ``mean`` of the four
    scored attributes, ``all`` (all four right). Also returns the images."""
    rows: dict[str, list[dict[str, bool]]] = {"all prompts": [], **{g: [] for g in dict.fromkeys(c.group for c in cases)}}
    images = []
    for case in cases:
        img = generate(case.prompt, case.seed, steps, cfg)
        images.append(img)
        ok = matches(case.scene or parse_caption(case.prompt), analyse(img))
        ok["all"] = all(ok[a] for a in SCORED)
        rows["all prompts"].append(ok)
        rows[case.group].append(ok)
    out = {}
    for name, oks in rows.items():
        if oks:
            res = {a: 100.0 * sum(o[a] for o in oks) / len(oks) for a in (*SCORED, "size", "all")}
            res["mean"] = sum(res[a] for a in SCORED) / len(SCORED)
            out[f"{name} ({len(oks)})"] = res
    return out, images


def contact_sheet(images: list[Image.Image], cols: int = 12) -> Image.Image:
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 66, rows * 66), (128, 128, 128))
    for i, im in enumerate(images):
        sheet.paste(im.resize((64, 64)), ((i % cols) * 66 + 1, (i // cols) * 66 + 1))
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="single-file checkpoint (default: the packaged one)")
    ap.add_argument("--snapshot", type=Path, help="a training snapshot (tools/train_default_model.py) instead")
    ap.add_argument("--backend", choices=("engine", "diffusers"), default="engine",
                    help="engine: sdlab.Engine (A1111 sampling; default); diffusers: StableDiffusionPipeline")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="Engine dtype (engine backend)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N prompts of each group")
    ap.add_argument("--settings", default="all", choices=("all", "main"), help="'main': 20 steps CFG 7 only")
    ap.add_argument("--independent", type=int, default=24,
                    help="also score this many prompts in INDEPENDENT_PHRASINGS (20 steps, CFG 7; 0: none)")
    ap.add_argument("--sheet", type=Path, help="write a contact sheet of the 20-step CFG 7 images here")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("EVAL_THREADS", "1")))
    cases = prompt_set()
    if args.limit:
        cases = tuple(c for g in GROUPS for c in [c for c in cases if c.group == g][: args.limit])
    if args.snapshot or args.backend == "diffusers":
        generate = diffusers_generate(*load_modules(args.checkpoint, args.snapshot))
    else:
        generate = engine_generate(args.checkpoint, args.dtype)
    cols = (*SCORED, "size", "mean", "all")
    for i, (steps, cfg) in enumerate(SETTINGS if args.settings == "all" else SETTINGS[:1]):
        res, images = score(generate, cases, steps, cfg)
        print(f"\n{steps} steps, Euler a, CFG {cfg:g}")
        print(f"{'prompts':<26}" + "".join(f"{a:>11}" for a in cols))
        for name, r in res.items():
            print(f"{name:<26}" + "".join(f"{r[a]:>10.1f}%" for a in cols))
        if i == 0 and args.sheet:
            contact_sheet(images).save(args.sheet)
    if args.independent:
        res, _ = score(generate, independent_set(args.independent), *SETTINGS[0])
        r = res[f"all prompts ({args.independent})"]
        print(f"\nindependent phrasings, {args.independent} prompts (20 steps, CFG 7): "
              + ", ".join(f"{a} {r[a]:.1f}%" for a in (*SCORED, "mean")))
    print("targets at 20 steps CFG 7: " + ", ".join(f"{a} >= {t:g}%" for a, t in TARGETS.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
