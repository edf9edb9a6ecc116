"""A parsed infotext mapped to snake_case request fields."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdlab.errors import InvalidRequestError

Converter = Callable[[Any], Any]


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    return value if isinstance(value, int) else int(str(value).strip())


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    result = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("expected True or False")
    return text == "true"


def _to_str(value: Any) -> str:
    return str(value)


def _unless(sentinel: str) -> Converter:
    """A string, or None when it is A1111's "use the same as the first pass" sentinel."""
    return lambda value: None if str(value) == sentinel else str(value)


def parse_hashes(value: Any) -> dict[str, str]:
    """``"name: hash, name2: hash2"`` (A1111 ``Lora hashes`` / ``TI hashes``) as a mapping."""
    result: dict[str, str] = {}
    for item in str(value).split(","):
        name, sep, digest = item.rpartition(":")
        if not sep or not name.strip():
            raise ValueError(f"expected 'name: hash', got {item.strip()!r}")
        result[name.strip()] = digest.strip()
    return result


@dataclass(frozen=True)
class FieldMapping:
    """One A1111 infotext key and the request field it fills."""

    key: str
    field: str
    convert: Converter = field(default=_to_str)


#: A1111 infotext keys -> snake_case request fields (data, not code).
REQUEST_FIELDS: tuple[FieldMapping, ...] = (
    FieldMapping("Prompt", "prompt"),
    FieldMapping("Negative prompt", "negative_prompt"),
    FieldMapping("Steps", "steps", _to_int),
    FieldMapping("Sampler", "sampler"),
    FieldMapping("Schedule type", "schedule_type"),
    FieldMapping("CFG scale", "cfg_scale", _to_float),
    FieldMapping("Image CFG scale", "image_cfg_scale", _to_float),
    FieldMapping("Seed", "seed", _to_int),
    FieldMapping("Size-1", "width", _to_int),
    FieldMapping("Size-2", "height", _to_int),
    FieldMapping("Face restoration", "face_restoration"),
    FieldMapping("Model hash", "model_hash"),
    FieldMapping("Model", "model"),
    FieldMapping("VAE hash", "vae_hash"),
    FieldMapping("VAE", "vae"),
    FieldMapping("Variation seed", "subseed", _to_int),
    FieldMapping("Variation seed strength", "subseed_strength", _to_float),
    FieldMapping("Seed resize from-1", "seed_resize_from_w", _to_int),
    FieldMapping("Seed resize from-2", "seed_resize_from_h", _to_int),
    FieldMapping("Denoising strength", "denoising_strength", _to_float),
    FieldMapping("Noise multiplier", "initial_noise_multiplier", _to_float),
    FieldMapping("Conditional mask weight", "inpainting_mask_weight", _to_float),
    FieldMapping("Clip skip", "clip_skip", _to_int),
    FieldMapping("ENSD", "ensd", _to_int),
    FieldMapping("Eta", "eta", _to_float),
    FieldMapping("Eta DDIM", "eta", _to_float),
    FieldMapping("Sigma churn", "s_churn", _to_float),
    FieldMapping("Sigma tmin", "s_tmin", _to_float),
    FieldMapping("Sigma noise", "s_noise", _to_float),
    FieldMapping("RNG", "rng"),
    FieldMapping("Emphasis", "emphasis"),
    FieldMapping("Tiling", "tiling", _to_bool),
    FieldMapping("Schedule max sigma", "sigma_max", _to_float),
    FieldMapping("Schedule min sigma", "sigma_min", _to_float),
    FieldMapping("Schedule rho", "rho", _to_float),
    FieldMapping("Beta schedule alpha", "beta_schedule_alpha", _to_float),
    FieldMapping("Beta schedule beta", "beta_schedule_beta", _to_float),
    FieldMapping("Hires upscale", "hr_scale", _to_float),
    FieldMapping("Hires upscaler", "hr_upscaler"),
    FieldMapping("Hires steps", "hr_second_pass_steps", _to_int),
    FieldMapping("Hires resize-1", "hr_resize_x", _to_int),
    FieldMapping("Hires resize-2", "hr_resize_y", _to_int),
    FieldMapping("Hires prompt", "hr_prompt"),
    FieldMapping("Hires negative prompt", "hr_negative_prompt"),
    FieldMapping("Hires sampler", "hr_sampler", _unless("Use same sampler")),
    FieldMapping("Hires schedule type", "hr_scheduler", _unless("Use same scheduler")),
    FieldMapping("Hires checkpoint", "hr_checkpoint", _unless("Use same checkpoint")),
    FieldMapping("Refiner", "refiner_checkpoint"),
    FieldMapping("Refiner switch at", "refiner_switch_at", _to_float),
    FieldMapping("Mask blur", "mask_blur", _to_int),
    FieldMapping("Mask mode", "mask_mode"),
    FieldMapping("Masked content", "inpainting_fill"),
    FieldMapping("Inpaint area", "inpaint_area"),
    FieldMapping("Masked area padding", "inpaint_full_res_padding", _to_int),
    FieldMapping("Lora hashes", "lora_hashes", parse_hashes),
    FieldMapping("TI hashes", "ti_hashes", parse_hashes),
    FieldMapping("Styles array", "styles", lambda v: tuple(str(x) for x in v)),
    FieldMapping("Token merging ratio", "token_merging_ratio", _to_float),
    FieldMapping("VAE Encoder", "vae_encoder"),
    FieldMapping("VAE Decoder", "vae_decoder"),
    FieldMapping("FP8 weight", "fp8_weight"),
    FieldMapping("Cache FP16 weight for LoRA", "cache_fp16_weight", _to_bool),
    FieldMapping("Discard penultimate sigma", "discard_penultimate_sigma", _to_bool),
    FieldMapping("Old prompt editing timelines", "old_prompt_editing_timelines", _to_bool),
    FieldMapping("Pad conds v0", "pad_conds_v0", _to_bool),
    FieldMapping("Downcast alphas_cumprod", "downcast_alphas_cumprod", _to_bool),
    FieldMapping("Refiner switch by sampling steps", "refiner_switch_by_sampling_steps", _to_bool),
    FieldMapping("Version", "version"),
)


def infotext_to_request_fields(
    parsed: Mapping[str, Any], mappings: Iterable[FieldMapping] = REQUEST_FIELDS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a :func:`parse_infotext` dict into (known request fields, unknown A1111 keys).

    Raises InvalidRequestError naming the key whose value cannot be converted.
    """
    by_key = {m.key: m for m in mappings}
    known: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for key, value in parsed.items():
        mapping = by_key.get(key)
        if mapping is None:
            unknown[key] = value
            continue
        try:
            known[mapping.field] = mapping.convert(value)
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(f"infotext field {key!r} has an unusable value {value!r}: {exc}") from exc
    return known, unknown
