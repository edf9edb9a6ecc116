"""Conformance suite for ``infotext.json``: A1111 ``parse_generation_parameters`` and ``create_infotext``.

Three case kinds: ``parse`` (``cases``), ``style`` (``style_cases`` with the file's ``style_db``) and
``writer`` (``writer_cases``: A1111's stubbed ``p`` + options, rendered by :mod:`sdlab.infotext` through
:class:`~sdlab.infotext.InfotextSettings`, then parsed back). Dict comparisons include key order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sdlab.conformance import VectorSuite
from sdlab.infotext import (
    InfotextSettings,
    ParseOptions,
    PromptStyle,
    create_infotext,
    infotext_params,
    parse_infotext,
)


def _cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for case in data.get("cases", []):
        yield f"parse:{case['id']}", {"kind": "parse", **case}
    styles = data.get("style_db", [])
    for case in data.get("style_cases", {}).get("cases", []):
        yield f"style:{case['id']}", {"kind": "style", "style_db": styles, **case}
    defaults = data.get("writer_defaults", {})
    for case in data.get("writer_cases", {}).get("cases", []):
        yield f"writer:{case['id']}", {"kind": "writer", "writer_defaults": defaults, **case}


def _assert_same_dict(got: Mapping[str, Any], want: Mapping[str, Any], what: str) -> None:
    if dict(got) != dict(want):
        diff = {k: (got.get(k, "<missing>"), want.get(k, "<missing>")) for k in {*got, *want} if got.get(k) != want.get(k)}
        raise AssertionError(f"{what}: (got, expected) differ at {diff}")
    if list(got) != list(want):
        raise AssertionError(f"{what}: key order {list(got)} != expected {list(want)}")
    bad_types = [k for k in want if type(got[k]) is not type(want[k])]
    if bad_types:
        raise AssertionError(f"{what}: value types differ for {bad_types}")


def _check_parse(case: dict[str, Any]) -> None:
    _assert_same_dict(parse_infotext(case["input"]), case["output"], "parse")


def _check_style(case: dict[str, Any]) -> None:
    styles = tuple(
        PromptStyle(s["name"], s.get("prompt") or "", s.get("negative_prompt") or "") for s in case["style_db"]
    )
    _assert_same_dict(parse_infotext(case["input"], ParseOptions(styles=styles)), case["output"], "parse with styles")


def _pick(value: Any, index: int) -> Any:
    """A1111 indexes list-valued params by image index; a failing index drops the value."""
    if not isinstance(value, list):
        return value
    return value[index] if -len(value) <= index < len(value) else None


def _image_index(p: Mapping[str, Any], call: Mapping[str, Any]) -> int:
    if call.get("use_main_prompt"):
        return 0
    if call.get("index") is not None:
        return int(call["index"])
    return int(call.get("position_in_batch", 0)) + int(call.get("iteration", 0)) * int(p.get("batch_size", 1))


def _token_merging(p: Mapping[str, Any], opts: Mapping[str, Any]) -> tuple[float, float]:
    """A1111 ``get_token_merging_ratio`` (base class): request values, falling back to options."""
    base = p.get("token_merging_ratio") or opts.get("token_merging_ratio") or 0
    hr = p.get("token_merging_ratio_hr") or opts.get("token_merging_ratio_hr") or base
    return base, hr


def writer_settings(
    p: Mapping[str, Any], opts: Mapping[str, Any], call: Mapping[str, Any], version: str | None
) -> tuple[str, str, InfotextSettings]:
    """Translate A1111's stubbed ``p``/options/call arguments into (prompt, negative, settings)."""
    index = _image_index(p, call)
    main = bool(call.get("use_main_prompt"))
    seeds = call.get("all_seeds") or p["all_seeds"]
    subseeds = call.get("all_subseeds") or p.get("all_subseeds") or [0]
    prompts = call.get("all_prompts") or p["all_prompts"]
    negatives = call.get("all_negative_prompts") or p["all_negative_prompts"]
    fp8 = opts.get("fp8_storage", "Disable") != "Disable"
    tome, tome_hr = _token_merging(p, opts)
    settings = InfotextSettings(
        steps=p["steps"],
        sampler_name=p["sampler_name"],
        scheduler=p.get("scheduler"),
        cfg_scale=p["cfg_scale"],
        image_cfg_scale=p.get("image_cfg_scale"),
        seed=p["all_seeds"][0] if main else seeds[index],
        face_restoration=opts.get("face_restoration_model") if p.get("restore_faces") else None,
        width=p["width"],
        height=p["height"],
        model_hash=p.get("sd_model_hash") if opts.get("add_model_hash_to_info") else None,
        model_name=p.get("sd_model_name") if opts.get("add_model_name_to_info") else None,
        fp8_weight=opts.get("fp8_storage") if fp8 else None,
        cache_fp16_weight=opts.get("cache_fp16_weight") if fp8 else None,
        vae_hash=p.get("sd_vae_hash") if opts.get("add_vae_hash_to_info") else None,
        vae_name=p.get("sd_vae_name") if opts.get("add_vae_name_to_info") else None,
        subseed=p.get("all_subseeds", subseeds)[0] if main else subseeds[index],
        subseed_strength=p.get("subseed_strength", 0),
        seed_resize_from=(p.get("seed_resize_from_w", -1), p.get("seed_resize_from_h", -1)),
        conditional_mask_weight=(
            p.get("inpainting_mask_weight", opts.get("inpainting_mask_weight"))
            if p.get("is_using_inpainting_conditioning")
            else None
        ),
        clip_skip=p.get("clip_skip", opts.get("CLIP_stop_at_last_layers", 1)),
        ensd=opts.get("eta_noise_seed_delta", 0),
        eta=p.get("eta"),
        token_merging_ratio=tome,
        token_merging_ratio_hr=tome_hr,
        enable_hr=bool(p.get("enable_hr")),
        init_image_hash=p.get("init_img_hash"),
        rng=opts.get("randn_source", "GPU"),
        tiling=bool(p.get("tiling")),
        extra=tuple((k, _pick(v, index)) for k, v in (p.get("extra_generation_params") or {}).items()),
        version=version if opts.get("add_version_to_infotext") else None,
        user=p.get("user") if opts.get("add_user_name_to_info") else None,
    )
    prompt = p["main_prompt"] if main else prompts[index]
    negative = p["main_negative_prompt"] if main else negatives[index]
    return prompt, negative, settings


def _check_writer(case: dict[str, Any]) -> None:
    opts = {**case["writer_defaults"].get("opts", {}), **case.get("opts_overrides", {})}
    prompt, negative, settings = writer_settings(case["p"], opts, case.get("call", {}), case.get("program_version"))
    text = create_infotext(prompt, negative, infotext_params(settings))
    if text != case["output"]:
        raise AssertionError(f"create_infotext:\n got      {text!r}\n expected {case['output']!r}")
    if "parsed_back" in case:
        _assert_same_dict(parse_infotext(text), case["parsed_back"], "parse of written infotext")


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "parse": _check_parse,
    "style": _check_style,
    "writer": _check_writer,
}


def _check(case: dict[str, Any], context: Any) -> None:
    _CHECKS[case["kind"]](case)


SUITE = VectorSuite(file="infotext.json", cases=_cases, check=_check)
