"""Writing A1111 infotext: the ordered parameter mapping and its text (``processing.create_infotext``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sdlab.errors import InvalidRequestError


#: Samplers whose noise depends on ENSD ("Eta noise seed delta"), with their A1111 aliases.
ENSD_SAMPLERS: frozenset[str] = frozenset(
    ("euler a", "k_euler_a", "k_euler_ancestral", "dpm++ 2s a", "k_dpmpp_2s_a", "dpm2 a", "k_dpm_2_a",
     "dpm fast", "k_dpm_fast", "dpm adaptive", "k_dpm_ad")
)  # fmt: skip


def sampler_uses_ensd(sampler_name: str, eta: float | None = None) -> bool:
    """Whether A1111 writes ``ENSD`` for this sampler: an ancestral k-sampler with eta != 0."""
    if sampler_name.strip().lower() not in ENSD_SAMPLERS:
        return False
    return eta is None or eta != 0


def quote(value: object) -> str:
    """A1111's infotext quoting: JSON-quote a value containing ``,``, ``\\n`` or ``:``, else ``str``."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"infotext value {text!r} cannot be written as JSON; pass a string") from exc


def format_params(params: Mapping[str, object]) -> str:
    """The parameter line: ``Key: value`` items (or bare ``Key`` when value == key), None dropped."""
    items = (key if key == value else f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    return ", ".join(items)


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Render an infotext: prompt, ``Negative prompt:`` line if non-empty, parameter line; stripped."""
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{format_params(params)}".strip()


@dataclass(frozen=True)
class InfotextSettings:
    """Everything A1111's ``create_infotext`` reads for one image, already resolved for that image.

    Fields left ``None`` are not written; options such as "add model hash to info" are applied by the
    caller by passing ``None``. ``extra`` is A1111's ``extra_generation_params`` in insertion order (a key
    also listed among the fixed fields keeps the fixed slot and takes the extra value).
    """

    steps: int
    sampler_name: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    scheduler: str | None = None
    image_cfg_scale: float | None = None
    face_restoration: str | None = None
    model_hash: str | None = None
    model_name: str | None = None
    fp8_weight: str | None = None
    cache_fp16_weight: bool | None = None
    vae_hash: str | None = None
    vae_name: str | None = None
    subseed: int | None = None
    subseed_strength: float = 0
    seed_resize_from: tuple[int, int] = (-1, -1)
    conditional_mask_weight: float | None = None
    clip_skip: int = 1
    ensd: int = 0
    eta: float | None = None
    token_merging_ratio: float = 0
    token_merging_ratio_hr: float = 0
    enable_hr: bool = False
    init_image_hash: str | None = None
    rng: str = "GPU"
    tiling: bool = False
    extra: tuple[tuple[str, object], ...] = ()
    version: str | None = None
    user: str | None = None


def _seed_resize(settings: InfotextSettings) -> str | None:
    w, h = settings.seed_resize_from
    return None if w <= 0 or h <= 0 else f"{w}x{h}"


def _fixed_params(s: InfotextSettings) -> dict[str, object]:
    varies = s.subseed_strength != 0
    extra = dict(s.extra)
    return {
        "Steps": s.steps,
        "Sampler": s.sampler_name,
        "Schedule type": s.scheduler,
        "CFG scale": s.cfg_scale,
        "Image CFG scale": s.image_cfg_scale,
        "Seed": s.seed,
        "Face restoration": s.face_restoration,
        "Size": f"{s.width}x{s.height}",
        "Model hash": s.model_hash,
        "Model": s.model_name,
        "FP8 weight": s.fp8_weight,
        "Cache FP16 weight for LoRA": s.cache_fp16_weight,
        "VAE hash": s.vae_hash,
        "VAE": s.vae_name,
        "Variation seed": s.subseed if varies else None,
        "Variation seed strength": s.subseed_strength if varies else None,
        "Seed resize from": _seed_resize(s),
        "Denoising strength": extra.get("Denoising strength"),
        "Conditional mask weight": s.conditional_mask_weight,
        "Clip skip": s.clip_skip if s.clip_skip > 1 else None,
        "ENSD": s.ensd if s.ensd != 0 and sampler_uses_ensd(s.sampler_name, s.eta) else None,
        "Token merging ratio": s.token_merging_ratio if s.token_merging_ratio != 0 else None,
        "Token merging ratio hr": s.token_merging_ratio_hr if s.enable_hr and s.token_merging_ratio_hr != 0 else None,
        "Init image hash": s.init_image_hash,
        "RNG": s.rng if s.rng != "GPU" else None,
        "Tiling": "True" if s.tiling else None,
    }


def infotext_params(settings: InfotextSettings) -> dict[str, object]:
    """A1111's ordered generation-parameter mapping for one image (``None`` values are dropped later)."""
    params = _fixed_params(settings)
    params.update(settings.extra)
    params["Version"] = settings.version
    params["User"] = settings.user
    return params
