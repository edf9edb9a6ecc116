"""``sdlab`` console script: sub-commands are a registry of (name, add_arguments, run) entries."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sdlab.cli.common import Command, add_perf_arguments
from sdlab.errors import SdlabError

EXIT_BAD_INPUT = 2


def _commands() -> tuple[Command, ...]:
    from sdlab.cli import generate, img2img, listing, upscale

    return generate.COMMANDS + img2img.COMMANDS + listing.COMMANDS + upscale.COMMANDS


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="sdlab", description="Stable Diffusion with A1111-exact results, offline.")
    parser.add_argument("--models-dir", help="A1111-style models folder (default: $SDLAB_MODELS or ./models)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="model dtype (default fp32 on CPU, fp16 on GPU)")
    add_perf_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input exits with code 2 and a one-line error on stderr."""
    commands = _commands()
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    by_name = {c.name: c for c in commands}
    try:
        return by_name[args.command].run(args)
    except SdlabError as exc:
        print(f"sdlab: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sdlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
