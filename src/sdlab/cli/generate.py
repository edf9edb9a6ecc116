"""``sdlab txt2img``: build a request from argv (or an image's infotext), run it, write the images."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

from sdlab.cli.common import Command, make_engine
from sdlab.types import GenerationRequest, ProgressEvent

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare txt2img's options; every default is None so that unset options can be told apart."""
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (A1111 syntax); optional with --from")
    p.add_argument("-n", "--negative", help="negative prompt")
    p.add_argument("--from", dest="from_image", type=Path, help="regenerate from this image's infotext")
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


def build_request(args: argparse.Namespace, base: GenerationRequest) -> GenerationRequest:
    """``base`` with the prompt and every option that was given on the command line."""
    changes: dict[str, Any] = {field: getattr(args, opt) for opt, field in _OPTION_FIELDS if getattr(args, opt) is not None}
    if args.prompt is not None:
        changes["prompt"] = args.prompt
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
    request = build_request(args, base)
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
