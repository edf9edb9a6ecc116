"""A1111 ``parse_generation_parameters``: an infotext as A1111's dict of parameters."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sdlab.errors import InvalidRequestError
from sdlab.infotext.attention import uses_emphasis
from sdlab.infotext.params import ParseOptions, extract_styles, parse_param_line, split_infotext
from sdlab.infotext.versions import V180_HR_STYLES, apply_backcompat, infotext_version


def _apply_styles(res: dict[str, Any], prompt: str, negative: str, opts: ParseOptions) -> tuple[str, str]:
    found, new_prompt, new_negative = extract_styles(opts.styles, prompt, negative)
    same_hr_styles = True
    ver = infotext_version(res.get("Version"))
    if ("Hires prompt" in res or "Hires negative prompt" in res) and (ver is None or ver > V180_HR_STYLES):
        hr_prompt, hr_negative = res.get("Hires prompt", prompt), res.get("Hires negative prompt", negative)
        hr_found, hr_new_prompt, hr_new_negative = extract_styles(opts.styles, hr_prompt, hr_negative)
        same_hr_styles = found == hr_found
        if same_hr_styles:
            res["Hires prompt"] = "" if hr_new_prompt == new_prompt else hr_new_prompt
            res["Hires negative prompt"] = "" if hr_new_negative == new_negative else hr_new_negative
    if not same_hr_styles:
        return prompt, negative
    if (opts.infotext_styles == "Apply if any" and found) or opts.infotext_styles == "Apply":
        res["Styles array"] = found
    return new_prompt, new_negative


def old_hires_first_pass_size(width: int, height: int) -> tuple[int, int]:
    """A1111's old automatic first-pass size: scale to ~512x512 pixels, round up to multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires(res: dict[str, Any], opts: ParseOptions) -> None:
    """Convert old ``First pass size`` infotexts (and the old width/height option) to hires fields."""
    if opts.use_old_hires_fix_width_height:
        hires_w, hires_h = int(res.get("Hires resize-1", 0)), int(res.get("Hires resize-2", 0))
        if hires_w and hires_h:
            res["Size-1"], res["Size-2"] = hires_w, hires_h
            return
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    first_w, first_h = int(first_w), int(first_h)
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    if first_w == 0 or first_h == 0:
        first_w, first_h = old_hires_first_pass_size(width, height)
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


#: Defaults A1111 adds, in order, for keys an infotext lacks (before / after the old-hires conversion).
_DEFAULTS_EARLY: tuple[tuple[str, object], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_DEFAULTS_LATE: tuple[tuple[str, object], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def _set_defaults(res: dict[str, Any], defaults: Iterable[tuple[str, object]]) -> None:
    for key, value in defaults:
        res.setdefault(key, value)


def parse_infotext(text: str, options: ParseOptions | None = None) -> dict[str, Any]:
    """A1111's ``parse_generation_parameters``: the same keys, order and value types.

    Raises InvalidRequestError where A1111 itself fails (a prompt weight like ``(a:1.2.3)``).
    """
    opts = options or ParseOptions()
    prompt, negative, line = split_infotext(text)
    res: dict[str, Any] = parse_param_line(line)
    if opts.infotext_styles != "Ignore":
        prompt, negative = _apply_styles(res, prompt, negative, opts)
    res["Prompt"], res["Negative prompt"] = prompt, negative
    res.setdefault("Clip skip", "1")
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"], res["Hires resize-2"] = 0, 0
    _set_defaults(res, _DEFAULTS_EARLY)
    _restore_old_hires(res, opts)
    _set_defaults(res, _DEFAULTS_LATE)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if "Emphasis" not in res and _emphasis_or_error(prompt, negative):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    if opts.auto_backcompat:
        apply_backcompat(res)
    for key in opts.skip_fields:
        res.pop(key, None)
    return res


def _emphasis_or_error(prompt: str, negative: str) -> bool:
    try:
        return uses_emphasis(prompt, negative)
    except ValueError as exc:
        raise InvalidRequestError(f"infotext prompt has an invalid attention weight ({exc}); fix the weight") from exc
