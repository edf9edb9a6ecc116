"""The conformance runner's own logic: outcomes, summary lines, exit codes."""

from __future__ import annotations

from pathlib import Path

from sdlab.conformance import Outcome, VectorSuite, run_case, summary_line
from sdlab.conformance.__main__ import main


def _check(case: int, context: object) -> str | None:
    if case < 0:
        raise AssertionError(f"negative {case}")
    if case == 0:
        raise ZeroDivisionError("boom")
    return "deviation" if case == 7 else None


SUITE = VectorSuite(file="x.json", cases=lambda data: [(str(c), c) for c in data["cases"]], check=_check)


def test_run_case_maps_results_to_statuses() -> None:
    assert run_case(SUITE, "a", 1, None) == Outcome("a", "pass")
    assert run_case(SUITE, "b", 7, None).status == "deviation"
    failed = run_case(SUITE, "c", -2, None)
    assert failed.status == "fail" and "negative -2" in failed.detail
    crashed = run_case(SUITE, "d", 0, None)
    assert crashed.status == "fail" and crashed.detail.startswith("ZeroDivisionError: boom")


def test_summary_line_format() -> None:
    outcomes = [Outcome("a", "pass"), Outcome("b", "fail"), Outcome("c", "pass")]
    assert summary_line("infotext", outcomes) == "infotext: 2 passed, 1 failed"
    assert summary_line("lora", [*outcomes, Outcome("d", "deviation")]) == "lora: 2 passed, 1 failed, 1 deviations"


def test_main_rejects_a_folder_without_vector_files(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert "no known vector files" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
