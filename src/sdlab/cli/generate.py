"""``sdlab txt2img``: build a request from argv (or an image's infotext), run it, write the images."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from sdlab.cli.common import Command, make_engine
from sdlab.types import GenerationRequest, HiresFix, PostSteps, ProgressEvent, RefinerSpec

#: CLI option -> request field. Options left unset keep the request's (or the infotext's) value.
_OPTION_FIELDS: tuple[tuple[str, str], ...] = (
    ("negative", "negative_prompt"),
    ("model", "model"),
    ("vae", "vae"),
    ("steps", "steps"),
    ("cfg", "cfg_scale"),
    ("seed", "seed"),
    ("subseed", "subseed"),
    ("subseed_strength", "subseed_strength"),
    ("width", "width"),
    ("height", "height"),
    ("batch_size", "batch_size"),
    ("batch_count", "n_iter"),
    ("sampler", "sampler"),
    ("schedule_type", "schedule_type"),
    ("clip_skip", "clip_skip"),
    ("rng", "rng"),
    ("ensd", "eta_noise_seed_delta"),
    ("emphasis", "emphasis"),
    ("eta", "eta"),
)


#: --hires-* option -> HiresFix field
_HIRES_FIELDS: tuple[tuple[str, str], ...] = (
    ("hires_scale", "scale"), ("hires_upscaler", "upscaler"), ("hires_steps", "second_pass_steps"),
    ("hires_denoise", "denoising_strength"), ("hires_prompt", "prompt"), ("hires_negative", "negative_prompt"),
    ("hires_sampler", "sampler"), ("hires_schedule_type", "schedule_type"), ("hires_resize_x", "resize_x"),
    ("hires_resize_y", "resize_y"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare txt2img's options; every default is None so that unset options can be told apart."""
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (A1111 syntax); optional with --from")
    p.add_argument("--from", dest="from_image", type=Path, help="regenerate from this image's infotext")
    add_common_arguments(p)
    h = p.add_argument_group("hires fix (a second pass at a larger size; any --hires-* option enables it)")
    h.add_argument("--hires", action="store_true", help="enable hires fix with A1111's defaults (2x, Latent, 0.7)")
    h.add_argument("--hires-scale", type=float, help="upscale factor (default 2)")
    h.add_argument("--hires-upscaler", help='"Latent", "Latent (bicubic)", ..., "Lanczos", "Nearest"')
    h.add_argument("--hires-steps", type=int, help="second-pass steps (0 = same as --steps)")
    h.add_argument("--hires-denoise", type=float, help="second-pass denoising strength, 0..1 (default 0.7)")
    h.add_argument("--hires-prompt", help="second-pass prompt (default: the prompt)")
    h.add_argument("--hires-negative", help="second-pass negative prompt")
    h.add_argument("--hires-sampler", help="second-pass sampler (default: the same)")
    h.add_argument("--hires-schedule-type", help="second-pass schedule type (default: the same)")
    h.add_argument("--hires-resize-x", type=int, help="resize width in pixels instead of a scale")
    h.add_argument("--hires-resize-y", type=int, help="resize height in pixels instead of a scale")


def add_refiner_arguments(p: argparse.ArgumentParser) -> None:
    """--refiner / --refiner-switch-at."""
    p.add_argument("--refiner", help="SDXL refiner checkpoint name or path")
    p.add_argument("--refiner-switch-at", type=float, help="fraction of the timesteps after which it takes over (default 0.8)")
    p.add_argument("--refiner-switch-by-steps", action="store_true", default=None,
                   help="count the fraction in sampling steps, not model timesteps (A1111's pre-1.7 behaviour)")


def add_post_arguments(p: argparse.ArgumentParser) -> None:
    """--restore-faces / --upscale post steps."""
    g = p.add_argument_group("post steps (after decoding)")
    g.add_argument("--restore-faces", nargs="?", const="GFPGAN", help="restore faces with GFPGAN (default) or CodeFormer")
    g.add_argument("--face-visibility", type=float, help="blend of the restored faces, 0..1 (default 1)")
    g.add_argument("--codeformer-weight", type=float, help="CodeFormer fidelity, 0..1 (default 0.5)")
    g.add_argument("--allow-noncommercial", action="store_true", help="allow CodeFormer (non-commercial licence)")
    g.add_argument("--upscale", help="upscale the results with Lanczos, Nearest or a model upscaler")
    g.add_argument("--upscale-by", type=float, help="upscale factor (default 2)")


def _post(args: argparse.Namespace, base: PostSteps | None) -> PostSteps | None:
    given = {
        "face_restoration": getattr(args, "restore_faces", None), "visibility": getattr(args, "face_visibility", None),
        "codeformer_weight": getattr(args, "codeformer_weight", None), "upscaler": getattr(args, "upscale", None),
        "upscale_by": getattr(args, "upscale_by", None),
        "allow_noncommercial": True if getattr(args, "allow_noncommercial", False) else None,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        return base
    return dataclasses.replace(base or PostSteps(), **changes)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by txt2img, img2img and inpaint (all default to None)."""
    p.add_argument("-n", "--negative", help="negative prompt")
    add_refiner_arguments(p)
    add_post_arguments(p)
    p.add_argument("--model", help="checkpoint name or path (default: first in the models folder, else the embedded model)")
    p.add_argument("--vae", help="external VAE name or path")
    p.add_argument("--steps", type=int)
    p.add_argument("--cfg", type=float, help="CFG scale")
    p.add_argument("--seed", type=int, help="-1 for random")
    p.add_argument("--subseed", type=int, help="variation seed")
    p.add_argument("--subseed-strength", type=float, help="variation strength, 0..1")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batch-count", type=int)
    p.add_argument("--sampler", help='sampler name as in A1111, e.g. "Euler a", "DPM++ 2M Karras"')
    p.add_argument("--schedule-type", "--scheduler", dest="schedule_type", help="Automatic, Karras, Exponential, ...")
    p.add_argument("--clip-skip", type=int)
    p.add_argument("--rng", choices=("GPU", "CPU", "NV"), help="noise source (A1111's RNG setting)")
    p.add_argument("--ensd", type=int, help="eta noise seed delta")
    p.add_argument("--emphasis", help="Original, No norm, Ignore, None")
    p.add_argument("--eta", type=float)
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)")
    p.add_argument("--format", choices=("png", "jpg", "webp"), default="png")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")


def _hires(args: argparse.Namespace, base: HiresFix | None) -> HiresFix | None:
    given = {field: getattr(args, opt) for opt, field in _HIRES_FIELDS if getattr(args, opt, None) is not None}
    if not given and not getattr(args, "hires", False):
        return base
    return replace(base or HiresFix(), **given)


def _refiner(args: argparse.Namespace, base: RefinerSpec | None) -> RefinerSpec | None:
    name, switch_at = getattr(args, "refiner", None), getattr(args, "refiner_switch_at", None)
    by_steps = getattr(args, "refiner_switch_by_steps", None)
    if name is None and switch_at is None and by_steps is None:
        return base
    if name is None and base is None:
        from sdlab.errors import InvalidRequestError

        raise InvalidRequestError("--refiner-switch-at and --refiner-switch-by-steps need --refiner NAME")
    checkpoint = name or base.checkpoint  # type: ignore[union-attr]
    at = switch_at if switch_at is not None else (base.switch_at if base else 0.8)
    steps = by_steps if by_steps is not None else (base.by_sampling_steps if base else False)
    return RefinerSpec(checkpoint, at, by_sampling_steps=steps)


def build_request(args: argparse.Namespace, base: GenerationRequest) -> GenerationRequest:
    """``base`` with the prompt and every option that was given on the command line."""
    changes: dict[str, Any] = {field: getattr(args, opt) for opt, field in _OPTION_FIELDS if getattr(args, opt) is not None}
    if args.prompt is not None:
        changes["prompt"] = args.prompt
    changes["hires"] = _hires(args, base.hires)
    changes["refiner"] = _refiner(args, base.refiner)
    changes["post"] = _post(args, base.post)
    return base.replace(**changes)


def _progress_printer(enabled: bool) -> Any:
    def show(event: ProgressEvent) -> None:
        width = 30
        done = int(width * event.step / max(event.total_steps, 1))
        bar = "#" * done + "-" * (width - done)
        run = f" run {event.iteration + 1}/{event.n_iter}" if event.n_iter > 1 else ""
        sys.stderr.write(f"\r[{bar}] {event.step}/{event.total_steps}{run}")
        if event.step == event.total_steps:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show if enabled else None


def run(args: argparse.Namespace) -> int:
    """Generate and save; print paths (or JSON)."""
    from sdlab.errors import InvalidRequestError

    engine = make_engine(args)
    if args.from_image is not None:
        base = engine.request_from_image(args.from_image)
    elif args.prompt is None:
        raise InvalidRequestError("give a PROMPT, or --from IMAGE to regenerate from an image's infotext")
    else:
        base = GenerationRequest()
    return generate_and_save(engine, args, build_request(args, base))


def generate_and_save(engine: Any, args: argparse.Namespace, request: GenerationRequest) -> int:
    """Run ``request``, save the images, print their paths (or JSON); exit code 0."""
    show = _progress_printer(sys.stderr.isatty() and not args.json)
    result = engine.generate(request, progress=show, cancel=threading.Event())
    saved = engine.save(result, args.out, fmt=args.format)
    if args.json:
        payload = {
            "model": result.model_name,
            "images": [{"path": str(s.path), "seed": s.seed, "infotext": s.infotext} for s in saved],
            "timings": dict(result.timings),
        }
        print(json.dumps(payload, indent=2))
    else:
        total = result.timings.get("total", 0.0)
        for s in saved:
            print(s.path)
        print(f"{len(saved)} image(s), model {result.model_name}, {total:.1f} s", file=sys.stderr)
    return 0


COMMANDS: tuple[Command, ...] = (Command("txt2img", "generate images from a prompt", add_arguments, run),)
