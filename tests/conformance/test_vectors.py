"""Every case of every vector file in ../shared/conformance, through the same suites as `make conformance`."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from sdlab.conformance import SUITE_MODULES, VectorSuite, load_suite, run_case

VECTORS = Path(os.environ.get("SDLAB_VECTORS", Path(__file__).resolve().parents[3] / "shared" / "conformance"))


@cache
def _suite_and_data(file: str) -> tuple[VectorSuite, dict[str, Any]]:
    suite = load_suite(file)
    return suite, json.loads((VECTORS / file).read_text(encoding="utf-8"))


@cache
def _context(file: str) -> Any:
    suite, data = _suite_and_data(file)
    return suite.prepare(data, VECTORS)


def _params() -> list[Any]:
    params = []
    for file, _ in SUITE_MODULES:
        if not (VECTORS / file).is_file():
            params.append(pytest.param(file, None, None, id=f"{file}-missing"))
            continue
        try:
            suite, data = _suite_and_data(file)
        except Exception as exc:  # noqa: BLE001 - reported as a failing test, not a collection crash
            params.append(pytest.param(file, None, repr(exc), id=f"{file}-unloadable"))
            continue
        for case_id, case in suite.cases(data):
            params.append(pytest.param(file, case_id, case, id=f"{file}:{case_id}"))
    return params


@pytest.mark.parametrize(("file", "case_id", "case"), _params())
def test_case(file: str, case_id: str | None, case: Any) -> None:
    if case_id is None:
        why = case or f"vector file {VECTORS / file} is missing: the tests need ../shared/conformance beside the repo"
        pytest.fail(f"{file}: {why}")
    suite, _ = _suite_and_data(file)
    outcome = run_case(suite, case_id, case, _context(file))
    assert outcome.status != "fail", outcome.detail
