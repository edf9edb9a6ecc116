"""Listing and inspection commands: ``sdlab models``, ``sdlab info IMAGE``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdlab.cli.common import Command, make_engine


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_models(args: argparse.Namespace) -> int:
    engine = make_engine(args)
    infos = engine.list_models()
    if args.json:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return 0
    if not infos:
        print(f"no checkpoints in {engine.models_dir.folder('checkpoint')} (the embedded default model is used)")
    for info in infos:
        print(info.summary_line())
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="a PNG/JPEG/WebP written by sdlab or A1111")
    p.add_argument("--json", action="store_true", help="print the parsed parameters as JSON")


def _run_info(args: argparse.Namespace) -> int:
    from sdlab.errors import InvalidRequestError
    from sdlab.infotext import parse_infotext
    from sdlab.outputs import read_infotext

    text = read_infotext(args.image)
    if text is None:
        raise InvalidRequestError(f"{args.image} carries no generation parameters (no 'parameters' text or EXIF comment)")
    params = parse_infotext(text)
    if args.json:
        print(json.dumps(params, indent=2, default=str))
    else:
        for key, value in params.items():
            print(f"{key}: {value}")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("models", "list the checkpoints in the models folder with family and hash", _add_models, _run_models),
    Command("info", "print the generation parameters stored in an image", _add_info, _run_info),
)
