"""Conformance runner: checks sdlab against A1111 test vectors (files like ../shared/conformance/*.json).

Each vector file is handled by a :class:`VectorSuite` declared in its own module (``SUITE = VectorSuite(...)``);
:data:`SUITE_MODULES` maps file names to those modules. The runner works on any file of the same name and
format, not only the cases it has seen. ``python -m sdlab.conformance DIR`` prints one line per file:
``NAME: N passed, M failed`` (``, K deviations`` where a suite documents deliberate deviations from A1111).
"""

from __future__ import annotations

import importlib
import json
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["pass", "fail", "deviation"]

#: vector file name -> module defining ``SUITE``. One line per file; modules are imported lazily.
SUITE_MODULES: tuple[tuple[str, str], ...] = (
    ("infotext.json", "sdlab.conformance.infotext_suite"),
    ("prompt_attention.json", "sdlab.conformance.prompt_attention_suite"),
    ("prompt_schedules.json", "sdlab.conformance.prompt_schedules_suite"),
    ("tokens_chunks.json", "sdlab.conformance.tokens_chunks_suite"),
    ("conditioning.json", "sdlab.conformance.conditioning_suite"),
    ("sigmas.json", "sdlab.conformance.sigmas_suite"),
    ("rng.json", "sdlab.conformance.rng_suite"),
    ("samplers.json", "sdlab.conformance.samplers_suite"),
    ("lora_deltas.json", "sdlab.conformance.lora_deltas_suite"),
)


@dataclass(frozen=True)
class Outcome:
    """The result of one case: ``status`` and a short human-readable ``detail`` (empty on pass)."""

    case_id: str
    status: Status
    detail: str = ""


def _no_context(data: dict[str, Any], vectors_dir: Path) -> Any:
    return None


@dataclass(frozen=True)
class VectorSuite:
    """How to run one vector file.

    ``cases(data)`` yields ``(case_id, case)`` pairs; ``check(case, context)`` returns ``None`` or
    ``"deviation"`` when the case passes (a deviation is a documented, deliberate difference from A1111)
    and raises ``AssertionError`` (or any exception) when it fails. ``prepare(data, vectors_dir)`` builds a
    shared context once per file (a loaded model, say).
    """

    file: str
    cases: Callable[[dict[str, Any]], Iterable[tuple[str, Any]]]
    check: Callable[[Any, Any], str | None]
    prepare: Callable[[dict[str, Any], Path], Any] = field(default=_no_context)


def load_suite(file: str) -> VectorSuite:
    """Import the suite declared for vector file ``file`` (a bare file name)."""
    modules = dict(SUITE_MODULES)
    if file not in modules:
        raise KeyError(f"no conformance suite for {file!r}; known files: {', '.join(modules)}")
    suite = importlib.import_module(modules[file]).SUITE
    assert isinstance(suite, VectorSuite)
    return suite


def run_case(suite: VectorSuite, case_id: str, case: Any, context: Any) -> Outcome:
    """Run one case, turning a raised exception into a ``fail`` outcome."""
    try:
        verdict = suite.check(case, context)
    except AssertionError as exc:
        return Outcome(case_id, "fail", str(exc) or "assertion failed")
    except Exception as exc:  # noqa: BLE001 - a crash is a failed case, reported with its cause
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return Outcome(case_id, "fail", f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})")
    return Outcome(case_id, "deviation" if verdict == "deviation" else "pass")


def run_file(path: Path) -> Iterator[Outcome]:
    """Run every case of the vector file at ``path``."""
    suite = load_suite(path.name)
    data = json.loads(path.read_text(encoding="utf-8"))
    context = suite.prepare(data, path.parent)
    for case_id, case in suite.cases(data):
        yield run_case(suite, case_id, case, context)


def vector_files(vectors_dir: Path) -> list[Path]:
    """The vector files in ``vectors_dir`` that have a suite, in :data:`SUITE_MODULES` order."""
    return [vectors_dir / name for name, _ in SUITE_MODULES if (vectors_dir / name).is_file()]


def summary_line(name: str, outcomes: list[Outcome]) -> str:
    """``NAME: N passed, M failed`` plus ``, K deviations`` when there are any."""
    passed = sum(o.status == "pass" for o in outcomes)
    failed = sum(o.status == "fail" for o in outcomes)
    deviations = sum(o.status == "deviation" for o in outcomes)
    line = f"{name}: {passed} passed, {failed} failed"
    return line + (f", {deviations} deviations" if deviations else "")
