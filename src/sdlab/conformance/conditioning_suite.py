"""conditioning.json: :class:`sdlab.prompt.encode.TextConditioner` on the tiny CLIP text model.

Tolerance (README section 8 "Exactness"): A1111's tensors are reproduced bit for bit with eager attention,
so every value must be equal as float32 and, where only a summary is given, its SHA-256 of the
little-endian float32 bytes must match. Also checked: chunk tokens/multipliers, shapes, the ``Emphasis``
infotext entry, errors, several texts in one call, and cond/uncond padding (off / pad / v0).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from sdlab.conformance import VectorSuite
from sdlab.errors import InvalidRequestError
from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.encode_family import FAMILIES, FamilySpec
from sdlab.prompt.encode_pad import pad_cond_uncond
from sdlab.prompt.tokenizer import ClipTokenizer

_PREFIX = "text_model."


@dataclass(frozen=True)
class _Context:
    conditioner: TextConditioner
    backtrack: int
    cases_by_id: dict[int, dict[str, Any]]


def _load_model(vectors_dir: Path, model: dict[str, Any]) -> CLIPTextModel:
    config = CLIPTextConfig.from_dict(json.loads((vectors_dir / model.get("config", "config.json")).read_text()))
    config._attn_implementation = "eager"
    text_model = CLIPTextModel(config).eval()
    state = load_file(str(vectors_dir / model.get("weights", "tiny_clip_text.safetensors")))
    state = {k[len(_PREFIX) :] if k.startswith(_PREFIX) else k: v for k, v in state.items()}
    missing, unexpected = text_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise AssertionError(f"tiny model keys do not fit: missing {missing}, unexpected {unexpected}")
    return text_model


def _prepare(data: dict[str, Any], vectors_dir: Path) -> _Context:
    model = _load_model(vectors_dir, data.get("model", {}))
    tiny_sd1 = FamilySpec("sd1-tiny", (replace(FAMILIES.get("sd1").encoders[0], width=None),))
    conditioner = TextConditioner(tiny_sd1, [ClipTokenizer.bundled("clip")], [model])
    backtrack = int(data.get("options", {}).get("comma_padding_backtrack", 20))
    return _Context(conditioner, backtrack, {c["id"]: c for c in data.get("cases", [])})


def _cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for case in data.get("cases", []):
        yield f"{case.get('group', 'case')}-{case['id']}", ("case", case)
    for index, case in enumerate(data.get("batch_cases", {}).get("cases", [])):
        yield f"batch-{index}", ("batch", case)
    for index, case in enumerate(data.get("cond_uncond_padding", {}).get("cases", [])):
        yield f"pad_cond_uncond-{index}", ("pad", case)


def _f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def _compare(got: torch.Tensor, want: dict[str, Any], label: str) -> None:
    if "shape" in want:
        assert list(got.shape) == list(want["shape"]), f"{label}: shape {list(got.shape)} != {want['shape']}"
    array = got.detach().cpu().to(torch.float32).numpy()
    if want.get("values") is not None:
        expected = _f32(want["values"]).reshape(array.shape[1:])
        diff = np.abs(array[0] - expected)
        assert np.array_equal(array[0], expected), f"{label}: values differ, max |diff| {diff.max():.3g} at {np.unravel_index(diff.argmax(), diff.shape)}"
        return
    _compare_summary(array, want["summary"], label)


def _compare_summary(array: np.ndarray, summary: dict[str, Any], label: str) -> None:
    flat = array.reshape(-1)
    digest = hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest()
    if digest == summary["sha256_f32le"]:
        return
    total = float(flat.astype(np.float64).sum())
    assert np.array_equal(flat[:8], _f32(summary["first8"])), f"{label}: first8 {flat[:8]} != {summary['first8']}"
    raise AssertionError(f"{label}: not bit-identical (sum {total!r} vs {summary['sum']!r})")


def _check_tokenization(conditioner: TextConditioner, case: dict[str, Any], backtrack: int) -> None:
    for key, emphasis in (("tokenization", "Original"), ("tokenization_emphasis_None", "None")):
        want = case.get(key)
        want = case["tokenization"] if want == "same as tokenization" else want
        if not isinstance(want, dict):
            continue
        options = EncodeOptions(emphasis=emphasis, comma_padding_backtrack=backtrack)
        if "error" in want:
            _expect_error(lambda: conditioner.tokenize([case["prompt"]], options), f"{key}")
            continue
        line = conditioner.tokenize([case["prompt"]], options)[0][0]
        assert line.token_count == want["token_count"], f"{key}: token_count {line.token_count} != {want['token_count']}"
        got = [{"tokens": list(c.tokens), "multipliers": list(c.multipliers)} for c in line.chunks]
        assert got == want["chunks"], f"{key}: chunks differ"


def _expect_error(call: Any, label: str) -> None:
    try:
        call()
    except InvalidRequestError:
        return
    raise AssertionError(f"{label}: A1111 raises here, sdlab did not")


def _check_case(case: dict[str, Any], ctx: _Context) -> None:
    _check_tokenization(ctx.conditioner, case, ctx.backtrack)
    entries = case["conditioning"]
    for key, want in entries.items():
        skip, emphasis = key.removeprefix("clip_skip_").split("/", 1)
        options = EncodeOptions(emphasis=emphasis, clip_skip=int(skip), comma_padding_backtrack=ctx.backtrack)
        if "error" in want:
            _expect_error(lambda: ctx.conditioner.encode([case["prompt"]], options), key)
            continue
        result = ctx.conditioner.encode([case["prompt"]], options)
        extra = dict(result.extra_generation_params)
        assert extra == want.get("extra_generation_params", {}), f"{key}: infotext {extra} != {want.get('extra_generation_params')}"
        reference = entries[want["same_as"]] if "same_as" in want else want
        _compare(result.cond, {**reference, "shape": want["shape"]}, key)


def _check_batch(case: dict[str, Any], ctx: _Context) -> None:
    options = EncodeOptions(emphasis=case["emphasis"], clip_skip=int(case["clip_skip"]), comma_padding_backtrack=ctx.backtrack)
    result = ctx.conditioner.encode(case["texts"], options)
    assert list(result.cond.shape) == case["shape"], f"shape {list(result.cond.shape)} != {case['shape']}"
    if case.get("values") is not None:
        expected = _f32(case["values"]).reshape(result.cond.shape)
        assert np.array_equal(result.cond.numpy(), expected), "batch values differ"
    else:
        _compare_summary(result.cond.numpy(), case["summary"], "batch")
    if case.get("empty_chunk"):
        pad = ctx.conditioner.tokenize([""])[0][0].chunks[0]
        assert list(pad.tokens) == case["empty_chunk"]["tokens"], "empty chunk tokens differ"


def _check_pad(case: dict[str, Any], ctx: _Context) -> None:
    options = EncodeOptions(comma_padding_backtrack=ctx.backtrack)
    positive = case["positive"] if "positive" in case else ctx.cases_by_id[case["positive_case_id"]]["prompt"]
    cond = ctx.conditioner.encode([positive], options).cond
    uncond = ctx.conditioner.encode([case["negative"]], options).cond
    assert list(cond.shape) == case["cond_shape"] and list(uncond.shape) == case["uncond_shape"], "shapes differ"
    off = pad_cond_uncond(cond, uncond, "off")
    assert off.cond is cond and off.uncond is uncond, "default mode must not pad"
    empty = ctx.conditioner.empty_prompt(options)
    for mode, key, flag in (("pad", "pad_cond_uncond", "flag_padded_cond_uncond"), ("v0", "pad_cond_uncond_v0", "flag_padded_cond_uncond_v0")):
        want = case[key]
        got = pad_cond_uncond(cond, uncond, mode, empty)
        assert list(got.cond.shape) == want["cond_shape"], f"{key}: cond shape {list(got.cond.shape)} != {want['cond_shape']}"
        assert list(got.uncond.shape) == want["uncond_shape"], f"{key}: uncond shape differs"
        assert bool(got.infotext) == bool(want[flag]), f"{key}: padding flag differs"
        _compare_summary(got.cond.numpy(), want["cond_summary"], f"{key} cond")
        _compare_summary(got.uncond.numpy(), want["uncond_summary"], f"{key} uncond")


_CHECKS = {"case": _check_case, "batch": _check_batch, "pad": _check_pad}


def _check(item: tuple[str, dict[str, Any]], ctx: _Context) -> None:
    kind, case = item
    _CHECKS[kind](case, ctx)
    return None


SUITE = VectorSuite(file="conditioning.json", cases=_cases, check=_check, prepare=_prepare)
