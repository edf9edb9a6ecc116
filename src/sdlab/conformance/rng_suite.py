"""Conformance suite for rng.json: NV Philox and torch CPU draws, A1111 ``ImageRNG`` noise and ``slerp``.

Draws are compared bit for bit (they are float32 values stored exactly); the float64 statistics of the
full-size latent summaries with a relative tolerance of 1e-9.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from sdlab.conformance import VectorSuite
from sdlab.rng import ImageRNG, create_generator, slerp

STAT_RTOL = 1e-9


def _flat(x: torch.Tensor | list[Any]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy().ravel()
    return np.asarray(x, dtype=np.float64).ravel()


def assert_exact(got: torch.Tensor, expected: list[Any], what: str) -> None:
    """Raise AssertionError unless ``got`` equals ``expected`` element for element (flattened, C order)."""
    g, e = _flat(got), _flat(expected)
    assert g.shape == e.shape, f"{what}: expected {e.size} values, got {g.size}"
    bad = np.flatnonzero(g != e)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(
            f"{what}: {bad.size} of {e.size} values differ; first at {i}: got {float(g[i])!r}, expected {float(e[i])!r}"
        )


_DRAW_KEY = re.compile(r"^(?P<second>second_call_)?randn_(?P<shape>\d+(?:x\d+)*)(?:_first(?P<first>\d+)|_full)?$")


def _draw_keys(case: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...], int, int | None]]:
    """``(key, shape, call index, prefix length)`` for every draw key such as ``randn_16``,
    ``second_call_randn_16``, ``randn_2x4x2_first8`` or ``randn_2x4x2_full``."""
    for key in case:
        m = _DRAW_KEY.match(key)
        if m:
            shape = tuple(int(d) for d in m["shape"].split("x"))
            yield key, shape, 1 if m["second"] else 0, int(m["first"]) if m["first"] else None


def _check_draws(source: str, case: dict[str, Any]) -> None:
    """Each draw key: call k of a fresh generator of the case's seed, drawing that shape every call."""
    seed = case["seed"]
    keys = list(_draw_keys(case))
    assert keys, f"{source} seed {seed}: no randn_* keys in case"
    for key, shape, call, prefix in keys:
        generator = create_generator(source, seed)
        draws = [generator.randn(shape) for _ in range(call + 1)]
        got = draws[-1].ravel()
        assert_exact(got if prefix is None else got[:prefix], case[key], f"{source} seed {seed} {key}")


def _check_philox(case: dict[str, Any]) -> None:
    _check_draws("NV", case)


def _check_torch_cpu(case: dict[str, Any]) -> None:
    _check_draws("CPU", case)


def _image_rng(case: dict[str, Any]) -> ImageRNG:
    return ImageRNG(
        case["shape"],
        case["seeds"],
        subseeds=case["subseeds"],
        subseed_strength=case["subseed_strength"],
        seed_resize_from_w=case["seed_resize_from_w"],
        seed_resize_from_h=case["seed_resize_from_h"],
        scale_factor=8,  # A1111 divides seed-resize sizes by 8
        source=case["randn_source"],
        ensd=case["eta_noise_seed_delta"],
    )


def _check_summary(noise: torch.Tensor, summary: dict[str, Any], what: str) -> None:
    assert list(noise.shape) == summary["shape"], f"{what}: shape {list(noise.shape)}, expected {summary['shape']}"
    flat = _flat(noise)
    assert_exact(flat[:16], summary["first16"], f"{what} first16")
    assert_exact(flat[-4:], summary["last4"], f"{what} last4")
    stats = {"sum_float64": flat.sum(), "mean_float64": flat.mean(), "std_float64": flat.std(ddof=1)}
    for key, value in stats.items():
        expected = summary[key]
        assert abs(value - expected) <= STAT_RTOL * abs(expected), f"{what} {key}: got {value!r}, expected {expected!r}"


def _check_image_rng(case: dict[str, Any]) -> None:
    rng = _image_rng(case)
    what = f"ImageRNG {case['randn_source']} seeds {case['seeds']}"
    first = rng.next()
    if "first" in case:
        assert list(first.shape) == [len(case["seeds"]), *case["shape"]], f"{what}: shape {list(first.shape)}"
        assert_exact(first, case["first"], f"{what} first")
    else:
        _check_summary(first, case["first_summary"], what)
    later = case.get("next_calls") or case["next_calls_first8"]
    for k, expected in enumerate(later):
        got = rng.next()
        got = got if "next_calls" in case else got.ravel()[: len(expected)]
        assert_exact(got, expected, f"{what} next call {k + 1}")


def _check_slerp(case: dict[str, Any]) -> None:
    low = torch.tensor(case["low"], dtype=torch.float32)
    high = torch.tensor(case["high"], dtype=torch.float32)
    assert_exact(slerp(case["val"], low, high), case["output"], f"slerp val={case['val']}")


_CHECKS = {
    "philox_nv": _check_philox,
    "torch_cpu": _check_torch_cpu,
    "image_rng": _check_image_rng,
    "slerp": _check_slerp,
}


def _case_id(section: str, i: int, case: dict[str, Any]) -> str:
    if section in ("philox_nv", "torch_cpu"):
        return f"{section}/seed={case['seed']}"
    if section == "image_rng":
        return f"{section}/{i}/{case['randn_source']}/seeds={case['seeds']}"
    return f"{section}/{i}/val={case['val']}"


def cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every case of every section (philox_nv, torch_cpu, image_rng, slerp)."""
    for section in _CHECKS:
        body = data.get(section, [])
        items = body["cases"] if isinstance(body, dict) else body
        for i, case in enumerate(items):
            yield _case_id(section, i, case), {"section": section, **case}


def check(case: dict[str, Any], context: Any) -> None:
    """Run one case; raises AssertionError on mismatch."""
    _CHECKS[case["section"]](case)


SUITE = VectorSuite(file="rng.json", cases=cases, check=check)
