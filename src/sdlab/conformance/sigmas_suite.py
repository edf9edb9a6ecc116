"""Conformance suite for sigmas.json: sigma schedules (A1111 v1.10.1 ``sd_schedulers``) and sampler views.

Cases: ``model`` (the sigma table built from the file's ``alphas_cumprod``), ``schedules/<label>/<n>``,
``extra/<description>/<n>`` (dev-branch Beta, SDXL Align Your Steps, AYS n=11 per family) and
``sampler_view/<sampler>/<schedule>/<n>`` (``sdlab.samplers.registry.sampler_sigmas``, owned by the
sampler module). Values are compared with the README's tolerance (relative 1e-6; zeros exact).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdlab.conformance import VectorSuite
from sdlab.samplers.schedules import SCHEDULES, get_sigmas
from sdlab.samplers.sigma_model import SigmaModel

RTOL = 1e-6
ATOL = 1e-12


def assert_close(got: torch.Tensor | list[float], expected: list[float], what: str) -> None:
    """Raise AssertionError unless ``got`` has the expected length and values within RTOL (zeros exact)."""
    g = np.asarray(got.tolist() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert g.shape == e.shape, f"{what}: expected {e.size} values, got {g.size}: {g.tolist()}"
    bad = np.flatnonzero(np.abs(g - e) > RTOL * np.abs(e) + ATOL)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {e.size} differ; first at index {i}: got {float(g[i])!r}, expected {float(e[i])!r}"
        )


def _family_of(description: str) -> str:
    """SDXL when the description says the model is SDXL, else SD 1.x."""
    return "sdxl" if re.search(r"is_sdxl\s*=\s*true|\bsdxl\b", description, re.IGNORECASE) else "sd1"


def _schedule_of(description: str) -> str:
    """The schedule an ``extra`` description names: the longest matching label; dev-branch Beta separately."""
    if description.lower().startswith("beta") and "dev" in description.lower():
        return "Beta (dev)"
    labels = sorted((n for n in SCHEDULES.names() if description.lower().startswith(n.lower())), key=len)
    if not labels:
        raise AssertionError(f"extra section {description!r} names no known schedule type")
    return labels[-1]


def _extra_cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for description, body in data.get("extra", {}).items():
        fixed_n = re.search(r"\bn\s*=\s*(\d+)", description)
        for key, values in body.items():
            if fixed_n and not key.isdigit():
                family = "sdxl" if "xl" in key.lower() else "sd1"
                case = {"kind": "extra", "description": description, "n": int(fixed_n.group(1)), "family": family}
            else:
                case = {"kind": "extra", "description": description, "n": int(key), "family": _family_of(description)}
            yield f"extra/{description}/{key}", {**case, "values": values}


def cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every case of sigmas.json (see the module docstring)."""
    yield "model", {"kind": "model", **data["model"]}
    for label, body in data["schedules"].items():
        for n, entry in body["sigmas"].items():
            yield f"schedules/{label}/{n}", {"kind": "schedule", "label": label, "n": int(n), **entry}
    yield from _extra_cases(data)
    for c in data.get("sampler_view", {}).get("cases", []):
        case_id = f"sampler_view/{c['sampler']}/{c['schedule_type']}/{c['steps']}"
        yield case_id, {"kind": "sampler_view", **c}


def prepare(data: dict[str, Any], vectors_dir: Path) -> SigmaModel:
    """The model table of the file, built from its float32 ``alphas_cumprod``."""
    return SigmaModel.from_alphas_cumprod(torch.tensor(data["model"]["alphas_cumprod_float32"], dtype=torch.float32))


def _check_model(case: dict[str, Any], model: SigmaModel) -> None:
    assert_close(model.sigmas, case["model_sigmas_float32"], "model sigmas")
    assert_close([model.sigma_min, model.sigma_max], [case["sigma_min"], case["sigma_max"]], "sigma_min/max")


def _check_schedule(case: dict[str, Any], model: SigmaModel) -> None:
    got = get_sigmas(case["label"], case["n"], model)
    assert got.dtype == torch.float32, f"{case['label']} n={case['n']}: dtype {got.dtype}, expected float32"
    assert_close(got, case["values"], f"{case['label']} n={case['n']}")


def _check_extra(case: dict[str, Any], model: SigmaModel) -> None:
    schedule = _schedule_of(case["description"])
    got = get_sigmas(schedule, case["n"], model, family=case["family"])
    assert_close(got, case["values"], f"{schedule} ({case['family']}) n={case['n']}")


def _check_sampler_view(case: dict[str, Any], model: SigmaModel) -> None:
    try:
        from sdlab.samplers.registry import sampler_sigmas  # noqa: PLC0415 - owned by the sampler module
    except ImportError as exc:
        raise AssertionError(f"sdlab.samplers.registry.sampler_sigmas is not available yet ({exc})") from exc
    got = sampler_sigmas(case["sampler"], case["schedule_type"], case["steps"], model)
    assert_close(got, case["sigmas"], f"{case['sampler']} / {case['schedule_type']} / {case['steps']} steps")


_CHECKS = {
    "model": _check_model,
    "schedule": _check_schedule,
    "extra": _check_extra,
    "sampler_view": _check_sampler_view,
}


def check(case: dict[str, Any], model: SigmaModel) -> None:
    """Run one case; raises AssertionError on mismatch."""
    _CHECKS[case["kind"]](case, model)


SUITE = VectorSuite(file="sigmas.json", cases=cases, check=check, prepare=prepare)
