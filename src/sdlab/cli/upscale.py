"""Post-processing commands: ``sdlab upscale``, ``sdlab upscalers``, ``sdlab restore-faces``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image

from sdlab.cli.common import Command, make_engine


def _free_path(folder: Path, stem: str) -> Path:
    """``folder/stem.png``, or ``stem-1.png``, ``stem-2.png``... when taken (never overwrites)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{stem}.png", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.png"
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(name).stem if "/" in name else name).strip("_") or "upscaler"


def _save(image: Image.Image, folder: Path, stem: str) -> Path:
    path = _free_path(folder, stem)
    image.save(path)
    print(path)
    return path


def _add_upscale(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image file(s) to upscale")
    p.add_argument("--upscaler", required=True, help="Lanczos, Nearest, None, an A1111 name (R-ESRGAN 4x+) or a model file name in ESRGAN/, RealESRGAN/, SwinIR/, DAT/, HAT/")
    p.add_argument("--scale", type=float, default=2.0, help="upscale factor, 0 < scale <= 16 (default 2); sides are rounded down to multiples of 8 as A1111 does")
    p.add_argument("--tile", type=int, default=None, help="tile size in input px for model upscalers (default 192 as A1111; 0 = no tiling)")
    p.add_argument("--tile-overlap", type=int, default=None, help="tile overlap in input px (default 8 as A1111)")
    p.add_argument("--out", type=Path, default=Path("outputs/extras"), help="output folder (default: outputs/extras)")


def _run_upscale(args: argparse.Namespace) -> int:
    from sdlab.post.images import load_image
    from sdlab.post.upscale import check_scale, load_upscaler, resolve_upscaler, upscale_image

    engine = make_engine(args)
    scale = check_scale(args.scale)
    ref = resolve_upscaler(engine.models_dir, args.upscaler)
    loaded = None if ref.kind == "builtin" else load_upscaler(ref, device=engine.device, dtype=engine.dtype)
    for path in args.images:
        image = load_image(path)
        if loaded is None:
            out = upscale_image(image, ref.name, scale, models_dir=engine.models_dir)
        else:
            out = loaded.upscale(image, scale, tile=args.tile, overlap=args.tile_overlap)
        _save(out, args.out, f"{path.stem}-{_slug(ref.name)}-x{scale:g}")
    return 0


def _add_upscalers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_upscalers(args: argparse.Namespace) -> int:
    import json

    from sdlab.post.upscale import available_upscalers

    refs = available_upscalers(make_engine(args).models_dir)
    rows = [{"name": r.name, "kind": r.kind, "path": str(r.path) if r.path else None} for r in refs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']}  {row['kind']}  {row['path'] or ''}".rstrip())
    return 0


def _add_restore(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image file(s) with faces")
    p.add_argument("--restorer", default="GFPGAN", choices=("GFPGAN", "CodeFormer"), help="face restorer (default GFPGAN)")
    p.add_argument("--model", default=None, help="model file name in GFPGAN/ or Codeformer/ (default: the only or A1111's default file)")
    p.add_argument("--visibility", type=float, default=1.0, help="blend of restored over original, 0..1 (default 1)")
    p.add_argument("--weight", type=float, default=0.5, help="CodeFormer fidelity weight, 0 (strongest) .. 1 (default 0.5)")
    p.add_argument("--allow-noncommercial", action="store_true", help="accept CodeFormer's non-commercial licence (needs spandrel_extra_arches)")
    p.add_argument("--out", type=Path, default=Path("outputs/extras"), help="output folder (default: outputs/extras)")


def _run_restore(args: argparse.Namespace) -> int:
    from sdlab.post.face import load_face_restorer, restore_faces
    from sdlab.post.images import load_image

    engine = make_engine(args)
    restorer = load_face_restorer(args.restorer, engine.models_dir, model=args.model, device=engine.device,
                                  dtype=engine.dtype, allow_noncommercial=args.allow_noncommercial)  # fmt: skip
    for path in args.images:
        out = restore_faces(load_image(path), restorer, visibility=args.visibility, weight=args.weight)
        _save(out, args.out, f"{path.stem}-{restorer.kind.name}")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("upscale", "upscale images with Lanczos, Nearest or a model upscaler (A1111 extras)", _add_upscale, _run_upscale),
    Command("upscalers", "list the upscalers: built-ins and model files in the models folder", _add_upscalers, _run_upscalers),
    Command("restore-faces", "restore faces with GFPGAN or CodeFormer (A1111 extras visibility/weight)", _add_restore, _run_restore),
)
