"""``python -m sdlab.conformance DIR [-v]``: run every vector file found in DIR and print a line per file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdlab.conformance import run_file, summary_line, vector_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdlab.conformance", description=__doc__)
    parser.add_argument("vectors", type=Path, help="folder holding vector files (infotext.json, ...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each failed case")
    args = parser.parse_args(argv)
    if not args.vectors.is_dir():
        print(f"error: {args.vectors} is not a folder", file=sys.stderr)
        return 2
    files = vector_files(args.vectors)
    if not files:
        print(f"error: no known vector files in {args.vectors}", file=sys.stderr)
        return 2
    any_failed = False
    for path in files:
        try:
            outcomes = list(run_file(path))
        except Exception as exc:  # noqa: BLE001 - a suite that cannot load fails its whole file
            print(f"{path.stem}: 0 passed, 1 failed")
            print(f"  FAIL (suite could not run): {type(exc).__name__}: {exc}")
            any_failed = True
            continue
        print(summary_line(path.stem, outcomes), flush=True)
        failed = [o for o in outcomes if o.status == "fail"]
        any_failed |= bool(failed)
        for o in failed[: None if args.verbose else 5]:
            print(f"  FAIL {o.case_id}: {o.detail[:300]}")
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
