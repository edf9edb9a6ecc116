"""Conformance suite for lora_deltas.json: LoRA / LyCORIS weight deltas, module by module.

Each run (one or several network files with a multiplier set) is simulated once on the SD1.5 formula
weights: every module key is mapped onto the diffusers SD1.5 layout (meta-device models from the
bundled configs), its delta computed by :func:`sdlab.models.adapters.networks.compute_delta` and added
in file order. Module cases compare the delta, bias delta, merged weight and bias with A1111's numbers
(tolerance from the README: ``|x - ref| <= 1e-6 * max(|ref|, max|W|, max|delta|)``); run cases
(``run:NAME``) compare the key resolution (unmatched keys, files that fail to load).

Cases covered by :data:`sdlab.models.adapters.networks.DEVIATIONS` are checked against an independent
float64 computation of LyCORIS's definition instead, and reported as ``"deviation"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdlab.conformance import VectorSuite
from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.keymap import ModuleIndex, Target, a1111_ignores
from sdlab.models.adapters.lora_file import NetworkFile, read_network
from sdlab.models.adapters.networks import NetworkModule, compute_delta, deviations_for, merged_weight

REL_TOL = 1e-6


# --------------------------------------------------------------------------------------------------
# model skeleton and base weights


@cache
def sd1_index() -> ModuleIndex:
    """Module index of an SD1.5 diffusers UNet + CLIP-L text encoder built on the meta device."""
    from diffusers import UNet2DConditionModel

    from sdlab.models.derive import load_template
    from sdlab.models.load import empty_text_encoder

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(load_template("sd1", "unet"))
    te = empty_text_encoder(load_template("sd1", "text_encoder"), with_projection=False)
    return ModuleIndex.build({"unet": unet, "text_encoder": te})


def formula_tensor(shape: list[int] | tuple[int, ...], k: int, fn: Any) -> torch.Tensor:
    """float32(0.01 * fn(0.1 * i + k)) over the C-order flat index, evaluated in float64."""
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return torch.from_numpy((0.01 * fn(0.1 * i + k)).astype(np.float32).reshape(shape))


@dataclass
class Applied:
    """What happened to one (file, module) in a run."""

    target: Target | None
    before: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    bias_delta: torch.Tensor | None = None
    error: str | None = None
    deviations: tuple[str, ...] = ()
    tainted: bool = False  # the weight was changed before by a deviating module


@dataclass
class RunResult:
    applied: dict[tuple[str, str], Applied] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    biases: dict[str, torch.Tensor | None] = field(default_factory=dict)
    failed_files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Context:
    data: dict[str, Any]
    files_dir: Path
    base: Mapping[str, dict[str, Any]]  # diffusers path -> base_weights entry

    @cache  # noqa: B019 - one context per file; caches simulated runs
    def network(self, file: str) -> NetworkFile:
        return read_network(self.files_dir / file)

    @cache  # noqa: B019
    def run(self, run: str) -> RunResult:
        return simulate(self, next(r for r in self.data["runs"] if r["run"] == run))


def _base(ctx: Context, target: Target) -> tuple[torch.Tensor, torch.Tensor | None]:
    entry = ctx.base.get(target.full_path)
    if entry is None:
        raise AssertionError(f"no base weight for {target.full_path} in base_weights")
    w = formula_tensor(entry["weight_shape"], entry["k"], np.sin)
    b = formula_tensor(entry["bias_shape"], entry["k"], np.cos) if entry.get("bias_shape") else None
    return w, b


def _apply_module(ctx: Context, res: RunResult, target: Target, module: NetworkModule, mset: dict) -> Applied:
    path = target.full_path
    if path not in res.weights:
        res.weights[path], res.biases[path] = _base(ctx, target)
    w = res.weights[path]
    m = mset["te"] if target.is_text_encoder else mset["unet"]
    out = Applied(target, before=w.clone(), deviations=deviations_for(module, w), tainted=path in _tainted(res))
    try:
        delta = compute_delta(module, w, m, mset["dyn"])
    except AdapterLoadError as exc:
        out.error = str(exc)
        return out
    out.delta, out.bias_delta = delta.weight, delta.bias
    res.weights[path] = merged_weight(module, w, m, mset["dyn"])[0]  # the path the model patcher takes
    if delta.bias is not None:
        b = res.biases[path]
        res.biases[path] = delta.bias.clone() if b is None else b + delta.bias
    return out


def _tainted(res: RunResult) -> set[str]:
    return {a.target.full_path for a in res.applied.values() if a.target and (a.deviations or a.tainted)}


def simulate(ctx: Context, run: dict[str, Any]) -> RunResult:
    """Apply the run's files in order on the formula weights, module by module."""
    res = RunResult()
    mset = ctx.data["multiplier_sets"][run["mset"]]
    index = sd1_index()
    for file in run["files"]:
        try:
            net = ctx.network(file)
        except AdapterLoadError as exc:
            res.failed_files[file] = str(exc)
            continue
        for module in net.modules:
            target = index.resolve(net.keys[module.name])
            if target is None:
                res.failed_files.setdefault(file, f"module {module.name} matches nothing")
                res.applied[(file, module.name)] = Applied(None, error="unmatched")
            elif a1111_ignores(target):
                res.applied[(file, module.name)] = Applied(target, error="ignored")
            else:
                res.applied[(file, module.name)] = _apply_module(ctx, res, target, module, mset)
    return res


# --------------------------------------------------------------------------------------------------
# comparison


def _values(summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    if "values" in summary:
        return np.asarray(summary["values"], dtype=np.float64), None
    return np.asarray(summary["samples"], dtype=np.float64), np.asarray(summary["indices"], dtype=np.int64)


def assert_close(got: torch.Tensor | None, summary: dict[str, Any] | None, scale: float, what: str) -> None:
    """Compare a tensor with a recorded summary (full values, or sums + sampled values)."""
    if summary is None:
        assert got is None, f"{what}: expected no tensor, sdlab produced one of shape {list(got.shape)}"
        return
    assert got is not None, f"{what}: expected a tensor of shape {summary['shape']}, sdlab produced none"
    assert list(got.shape) == list(summary["shape"]), f"{what}: shape {list(got.shape)} != {summary['shape']}"
    flat = got.detach().double().numpy().ravel()
    ref, idx = _values(summary)
    sel = flat if idx is None else flat[idx]
    tol = REL_TOL * np.maximum(np.abs(ref), scale)
    bad = np.flatnonzero(np.abs(sel - ref) > tol)
    if bad.size:
        i = int(bad[0])
        raise AssertionError(f"{what}: {bad.size} of {ref.size} values differ; first at {i}: got {sel[i]!r}, "
                             f"expected {ref[i]!r}")
    if idx is not None:
        for key in ("sum", "abs_sum"):
            got_sum = float(np.abs(flat).sum() if key == "abs_sum" else flat.sum())
            assert abs(got_sum - summary[key]) <= REL_TOL * summary["abs_sum"], (
                f"{what}: {key} {got_sum!r} != {summary[key]!r}"
            )


def _max_abs(t: torch.Tensor | None) -> float:
    return float(t.abs().max()) if t is not None and t.numel() else 0.0


# --------------------------------------------------------------------------------------------------
# independent float64 references for the deviations (LyCORIS definitions)


def _np(parts: Mapping[str, torch.Tensor], name: str) -> np.ndarray:
    return parts[name].double().numpy()


def _ref_dora_out(parts: Mapping[str, torch.Tensor], w: np.ndarray, m: float, dyn: int | None) -> np.ndarray:
    up, down = _np(parts, "lora_up.weight"), _np(parts, "lora_down.weight")
    rank = down.shape[0]
    s = float(parts["alpha"]) / rank if "alpha" in parts else 1.0
    keep = rank if dyn is None else min(dyn, rank)
    v = w + s * (up.reshape(up.shape[0], -1)[:, :keep] @ down.reshape(rank, -1)[:keep]).reshape(w.shape)
    norms = np.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(axis=1)).reshape(-1, *([1] * (w.ndim - 1)))
    d = _np(parts, "dora_scale").reshape(norms.shape)
    return m * (v * d / norms - w)


def _ref_glora_v3(parts: Mapping[str, torch.Tensor], w: np.ndarray, m: float, dyn: int | None) -> np.ndarray:
    a1, a2, b1, b2 = (_np(parts, f"{n}.weight") for n in ("a1", "a2", "b1", "b2"))
    s = float(parts["alpha"]) / a2.shape[0]
    return m * s * (b1 @ b2 + (w @ a1) @ a2)


def _ref_ia3_out(parts: Mapping[str, torch.Tensor], w: np.ndarray, m: float, dyn: int | None) -> np.ndarray:
    v = _np(parts, "weight").reshape(-1, *([1] * (w.ndim - 1)))
    return m * w * v


def _ref_oft(parts: Mapping[str, torch.Tensor], w: np.ndarray, m: float, dyn: int | None) -> np.ndarray:
    blocks = _np(parts, "oft_blocks")
    q = blocks - np.swapaxes(blocks, 1, 2)
    alpha = float(parts["alpha"]) if "alpha" in parts else 0.0
    if alpha:
        norm = np.sqrt((q**2).sum())
        q = q * (min(norm, alpha * w.shape[0]) + 1e-8) / (norm + 1e-8)
    eye = np.eye(q.shape[-1])
    rot = np.stack([(eye + qk) @ np.linalg.inv(eye - qk) for qk in q])
    wk = w.reshape(rot.shape[0], rot.shape[1], -1)
    rotated = np.einsum("kji,kjr->kir", rot, wk).reshape(w.shape)
    return m * (rotated - w)


REFERENCES = {
    "dora_out_layout": _ref_dora_out,
    "glora_v3_layout": _ref_glora_v3,
    "ia3_on_output_conv": _ref_ia3_out,
    "kohya_oft_sd1_names": _ref_oft,
}


def check_deviation(applied: Applied, module: NetworkModule, m: float, dyn: int | None, what: str) -> str:
    """Check a deviating module's delta against the independent LyCORIS computation."""
    assert applied.error is None, f"{what}: sdlab failed on a documented deviation: {applied.error}"
    assert applied.before is not None and applied.delta is not None
    (name,) = applied.deviations
    ref = REFERENCES[name](module.parts, applied.before.double().numpy(), m, dyn)
    got = applied.delta.double().numpy()
    scale = max(np.abs(ref).max(), np.abs(applied.before.numpy()).max())
    err = np.abs(got - ref).max()
    assert err <= 1e-5 * scale, f"{what}: deviation {name}: max error {err:.3g} vs LyCORIS reference (scale {scale:.3g})"
    return "deviation"


# --------------------------------------------------------------------------------------------------
# cases


def cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for run in data["runs"]:
        yield f"run:{run['run']}", {"kind": "run", **run}
    for case in data["cases"]:
        yield f"{case['id']}:{case['run']}:{case['module_name']}", {"kind": "module", **case}


def prepare(data: dict[str, Any], vectors_dir: Path) -> Context:
    base = {entry["diffusers_path"]: entry for entry in data["base_weights"].values()}
    return Context(data, vectors_dir / "lora_files", base)


def _check_module(case: dict[str, Any], ctx: Context) -> str | None:
    res = ctx.run(case["run"])
    what = f"{case['file']} {case['module_name']}"
    assert case["file"] not in res.failed_files, f"{what}: sdlab refused the file: {res.failed_files[case['file']]}"
    applied = res.applied.get((case["file"], case["module_name"]))
    assert applied is not None and applied.target is not None, f"{what}: module not found or not matched"
    assert applied.target.full_path == case["diffusers_path"], (
        f"{what}: mapped to {applied.target.full_path}, expected {case['diffusers_path']}"
    )
    m = case["te_multiplier"] if applied.target.is_text_encoder else case["unet_multiplier"]
    assert m == case["a1111_multiplier"], f"{what}: multiplier {m} != A1111's {case['a1111_multiplier']}"
    module = next(mod for mod in ctx.network(case["file"]).modules if mod.name == case["module_name"])
    if applied.deviations:
        return check_deviation(applied, module, m, case["dyn_dim"], what)
    if case["error"] is not None:  # A1111 skipped the layer silently; sdlab must refuse it loudly
        assert applied.error is not None, f"{what}: A1111 failed ({case['error']}) but sdlab applied a delta"
        return None
    assert applied.error is None, f"{what}: sdlab refused the module: {applied.error}"
    scale = max(_max_abs(applied.before), _max_abs(applied.delta))
    assert_close(applied.delta, case["delta"], scale, f"{what} delta")
    assert_close(applied.bias_delta, case["bias_delta"], scale, f"{what} bias delta")
    if applied.tainted:  # merged weights include an earlier deviating module's (different) result
        return "deviation"
    assert_close(res.weights[applied.target.full_path], case["merged_weight"], scale, f"{what} merged weight")
    if case["merged_bias"] is not None:
        assert_close(res.biases[applied.target.full_path], case["merged_bias"], scale, f"{what} merged bias")
    return None


def _check_run(run: dict[str, Any], ctx: Context) -> str | None:
    res = ctx.run(run["run"])
    if run["load_errors"]:
        assert set(res.failed_files) & set(run["files"]), f"{run['run']}: A1111 could not load it; sdlab accepted it"
        return None
    assert not res.failed_files, f"{run['run']}: sdlab refused {res.failed_files}"
    verdict = None
    for key in run["keys_failed_to_match"]:
        module_name = key.partition(".")[0]
        hits = [(f, a) for (f, name), a in res.applied.items() if name == module_name]
        assert hits, f"{run['run']}: key {key} not found in the run's files"
        file, applied = hits[0]
        if applied.error == "ignored":
            continue
        assert applied.deviations, f"{run['run']}: A1111 drops {key} but sdlab applied it to {applied.target}"
        mset = ctx.data["multiplier_sets"][run["mset"]]
        m = mset["te"] if applied.target and applied.target.is_text_encoder else mset["unet"]
        module = next(mod for mod in ctx.network(file).modules if mod.name == module_name)
        verdict = check_deviation(applied, module, m, mset["dyn"], f"{run['run']} {module_name}")
    return verdict


def check(case: dict[str, Any], ctx: Context) -> str | None:
    return _check_run(case, ctx) if case["kind"] == "run" else _check_module(case, ctx)


SUITE = VectorSuite(file="lora_deltas.json", cases=cases, check=check, prepare=prepare)
