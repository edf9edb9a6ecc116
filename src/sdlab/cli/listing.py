"""Listing and inspection commands: ``sdlab models``, ``sdlab info IMAGE``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
import json
from pathlib import Path

from dataclasses import asdict

from sdlab.cli.common import Command, make_engine
from sdlab.models.listing import CheckpointInfo


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def _describe(info: CheckpointInfo) -> dict[str, object]:
    """One checkpoint as plain data: name, hash, family / variant / prediction or the detection error."""
    d = info.detection
    return {
        "name": info.name,
        "short_hash": info.short_hash,
        "path": str(info.path),
        "family": d.family if d else None,
        "variant": d.variant if d else None,
        "prediction_type": d.prediction_type if d else None,
        "error": info.error,
    }


def _line(info: CheckpointInfo) -> str:
    d = _describe(info)
    if d["error"]:
        kind = f"unsupported: {d['error']}"
    else:
        variant = "" if d["variant"] in (None, "standard") else f" {d['variant']}"
        prediction = f" ({d['prediction_type']})" if d["prediction_type"] else ""
        kind = f"{d['family']}{variant}{prediction}"
    return f"{info.title}  {kind}  {info.path}"


def _run_models(args: argparse.Namespace) -> int:
    engine = make_engine(args)
    infos = engine.list_models()
    if args.json:
        print(json.dumps([_describe(info) for info in infos], indent=2))
        return 0
    if not infos:
        print(f"no checkpoints in {engine.models_dir.folder('checkpoint')} (the embedded default model is used)")
    for info in infos:
        print(_line(info))
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


def _plain(info: object) -> dict[str, object]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(info).items()}  # type: ignore[call-overload]


def _print_listing(args: argparse.Namespace, infos: tuple, describe: Callable[[Any], str], empty: str) -> int:
    """Print file infos as JSON or one line each (name [hash]  description  path)."""
    if args.json:
        print(json.dumps([_plain(i) for i in infos], indent=2))
        return 0
    for i in infos:
        print(f"{i.name} [{i.hash[:12]}]  {f'unreadable: {i.error}' if i.error else describe(i)}  {i.path}")
    if not infos:
        print(empty)
    return 0


def _run_loras(args: argparse.Namespace) -> int:
    from sdlab.models.adapters.catalog import list_loras

    return _print_listing(args, list_loras(make_engine(args).models_dir.root),
                          lambda i: f"{'/'.join(i.types)} {i.family or '?'} rank {i.rank or '?'}",
                          "no LoRA / LyCORIS files in the models folder's Lora/ or LyCORIS/")


def _run_embeddings(args: argparse.Namespace) -> int:
    from sdlab.models.adapters.catalog import list_embeddings

    return _print_listing(args, list_embeddings(make_engine(args).models_dir.root),
                          lambda i: f"{i.vectors} vector(s) {'/'.join(map(str, i.widths))} wide, {i.family or '?'}",
                          "no embeddings in the models folder's embeddings/")


COMMANDS: tuple[Command, ...] = (
    Command("models", "list the checkpoints in the models folder with family and hash", _add_models, _run_models),
    Command("info", "print the generation parameters stored in an image", _add_info, _run_info),
    Command("loras", "list LoRA / LyCORIS files with type, base family, rank and hash", _add_models, _run_loras),
    Command("embeddings", "list textual-inversion embeddings with vectors, family and hash", _add_models, _run_embeddings),
)
