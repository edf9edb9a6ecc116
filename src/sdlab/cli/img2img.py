"""``sdlab img2img IMAGE PROMPT`` and ``sdlab inpaint IMAGE MASK PROMPT``: argv -> request -> images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sdlab.cli.common import Command, make_engine
from sdlab.cli.generate import add_common_arguments, build_request, generate_and_save
from sdlab.types import GenerationRequest

#: option -> request field (img2img and inpaint)
_IMG2IMG_FIELDS: tuple[tuple[str, str], ...] = (
    ("strength", "denoising_strength"), ("resize_mode", "resize_mode"), ("noise_multiplier", "initial_noise_multiplier"),
    ("image_cfg", "image_cfg_scale"),
)
_INPAINT_FIELDS: tuple[tuple[str, str], ...] = (
    ("mask_blur", "mask_blur"), ("inpaint_area", "inpaint_area"), ("padding", "inpaint_full_res_padding"),
    ("masked_content", "inpainting_fill"), ("mask_weight", "inpainting_mask_weight"),
)


def open_image(path: Path, what: str) -> Any:
    """A fully read PIL image, or InvalidRequestError naming the file."""
    from PIL import Image, UnidentifiedImageError

    from sdlab.errors import InvalidRequestError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError as exc:
        raise InvalidRequestError(f"{what} {path} does not exist") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidRequestError(f"{what} {path} is not a readable image: {exc}") from exc


def _img2img_options(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--strength", "--denoise", dest="strength", type=float, help="denoising strength, 0..1 (default 0.75)")
    p.add_argument("--resize-mode", help='"Just resize" (default), "Crop and resize", "Resize and fill", '
                                         '"Just resize (latent upscale)"')
    p.add_argument("--noise-multiplier", type=float, help="A1111's initial noise multiplier (default 1.0)")
    p.add_argument("--fix-steps", action="store_true", help="A1111's img2img_fix_steps: run all --steps")
    p.add_argument("--image-cfg", type=float, help="instruct-pix2pix models' image CFG scale (A1111 UI default 1.5; "
                                                   "unset or 1: plain CFG)")


def add_img2img_arguments(p: argparse.ArgumentParser) -> None:
    """IMAGE PROMPT and the img2img options."""
    p.add_argument("image", type=Path, help="init image")
    p.add_argument("prompt", help="the prompt (A1111 syntax)")
    _img2img_options(p)


def add_inpaint_arguments(p: argparse.ArgumentParser) -> None:
    """IMAGE MASK PROMPT and the inpainting options."""
    p.add_argument("image", type=Path, help="init image")
    p.add_argument("mask", help='mask image (white = repaint), or "alpha" to repaint the transparent pixels of IMAGE')
    p.add_argument("prompt", help="the prompt (A1111 syntax)")
    _img2img_options(p)
    p.add_argument("--mask-blur", type=int, help="Gaussian blur of the mask in pixels (default 4)")
    p.add_argument("--invert", action="store_true", help="repaint the unmasked area instead")
    p.add_argument("--inpaint-area", choices=("Whole picture", "Only masked"), help="default: Whole picture")
    p.add_argument("--padding", type=int, help='"Only masked" padding in pixels (default 32)')
    p.add_argument("--masked-content", help='"fill", "original" (default), "latent noise", "latent nothing"')
    p.add_argument("--mask-weight", type=float, help="inpainting models' conditioning mask weight, 0..1 (default 1)")


def _request(args: argparse.Namespace, fields: tuple[tuple[str, str], ...]) -> GenerationRequest:
    args.from_image = None
    request = build_request(args, GenerationRequest())
    changes = {field: getattr(args, opt) for opt, field in fields if getattr(args, opt) is not None}
    if args.fix_steps:
        changes["img2img_fix_steps"] = True
    return request.replace(init_images=(open_image(args.image, "init image"),), **changes)


def run_img2img(args: argparse.Namespace) -> int:
    """Build an img2img request, generate, save."""
    engine = make_engine(args)
    return generate_and_save(engine, args, _request(args, _IMG2IMG_FIELDS))


def run_inpaint(args: argparse.Namespace) -> int:
    """Build an inpainting request, generate, save."""
    engine = make_engine(args)
    request = _request(args, _IMG2IMG_FIELDS + _INPAINT_FIELDS)
    if args.mask == "alpha":
        request = request.replace(mask_from_alpha=True)
    else:
        request = request.replace(mask=open_image(Path(args.mask), "mask"))
    if args.invert:
        request = request.replace(inpainting_mask_invert=True)
    return generate_and_save(engine, args, request)


COMMANDS: tuple[Command, ...] = (
    Command("img2img", "generate from an init image and a prompt", add_img2img_arguments, run_img2img),
    Command("inpaint", "repaint the masked part of an image", add_inpaint_arguments, run_inpaint),
)
