"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdlab.engine import Engine


@dataclass(frozen=True)
class Command:
    """One sub-command: how to declare its arguments and how to run it (returns an exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def make_engine(args: argparse.Namespace) -> Engine:
    """An Engine from the global options (--models-dir, --device, --dtype)."""
    from sdlab.engine import Engine

    models_dir = Path(args.models_dir) if args.models_dir else None
    return Engine(models_dir=models_dir, device=args.device, dtype=args.dtype)
