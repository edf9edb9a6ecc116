"""A1111 infotext ("parameters"): writing and parsing, exactly as stable-diffusion-webui v1.10.1.

Pure text logic, no torch. Writing: :func:`infotext_params` builds A1111's ordered field mapping from
:class:`InfotextSettings`; :func:`create_infotext` renders prompt, negative prompt and that mapping.
Parsing: :func:`parse_infotext` returns A1111's dict (``parse_generation_parameters``), and
:func:`infotext_to_request_fields` maps it to snake_case request fields.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdlab.errors import InvalidRequestError

# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------

# A1111 scans the parameter line with one regex (README "Param regex"); run naively it takes quadratic
# time on long key-like runs, so the same match rules are applied here piece by piece, in linear time.
_SPACE = re.compile(r"\s*")
_KEY_RUN = re.compile(r"\w[\w \-/]*")  # a key: a word char, then word chars, spaces, '-' or '/'
_QUOTED = re.compile(r'"(?:\\.|[^\\"])+"')  # a non-empty double-quoted value with backslash escapes
_UNQUOTED = re.compile(r"[^,]*")


def _value_at(line: str, pos: int) -> tuple[str, int]:
    """The value starting at ``pos`` and where the scan resumes (after its comma)."""
    quoted = _QUOTED.match(line, pos)
    if quoted is not None:
        end = quoted.end()
        if line.startswith(",", end):
            return quoted.group(), end + 1
        if end == len(line) or (end == len(line) - 1 and line[end] == "\n"):  # regex '$'
            return quoted.group(), end
    plain = _UNQUOTED.match(line, pos)
    assert plain is not None
    end = plain.end()
    return plain.group(), end + 1 if end < len(line) else end


def param_pairs(line: str) -> list[tuple[str, str]]:
    """Every ``key: value`` match of A1111's parameter regex in ``line``, left to right (raw values)."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(line):
        start = _SPACE.match(line, pos).end()  # type: ignore[union-attr]
        run = _KEY_RUN.match(line, start)
        if run is None:
            pos = start + 1
            continue
        end = run.end()
        if end - start < 2 or not line.startswith(":", end):
            pos = end  # every start inside this run fails the same way
            continue
        value, pos = _value_at(line, _SPACE.match(line, end + 1).end())  # type: ignore[union-attr]
        pairs.append((line[start:end], value))
    return pairs


_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"


@dataclass(frozen=True)
class PromptStyle:
    """A saved style (A1111 ``styles.csv`` row): prompt may contain ``{prompt}``."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


@dataclass(frozen=True)
class ParseOptions:
    """A1111 options that influence parsing; defaults are A1111's."""

    styles: tuple[PromptStyle, ...] = ()
    infotext_styles: str = "Apply if any"  # "Ignore" | "Apply" | "Discard" | "Apply if any"
    skip_fields: tuple[str, ...] = ()
    use_old_hires_fix_width_height: bool = False
    auto_backcompat: bool = True


def split_infotext(text: str) -> tuple[str, str, str]:
    """Split into (prompt, negative prompt, parameter line) the way A1111 does."""
    *lines, last = text.strip().split("\n")
    if len(param_pairs(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE) :].strip()
        if in_negative:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    return prompt, negative, last


def unquote(value: str) -> str:
    """A double-quoted value decoded as JSON; the raw text when that fails."""
    if not value or value[0] != '"' or value[-1] != '"':
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def parse_param_line(line: str) -> dict[str, str]:
    """The ``Key: value`` pairs of a parameter line; ``WxH`` values become ``Key-1``/``Key-2``."""
    res: dict[str, str] = {}
    for key, value in param_pairs(line):
        if not value:  # A1111 indexes value[0] and skips the pair on the resulting error
            continue
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = _IMAGE_SIZE.match(value)
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    return res


# --- styles (A1111 modules/styles.py: extract_styles_from_prompt) -----------------------------------


def _strip_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """Remove one style's text from a prompt: ``{prompt}`` template, or a trailing suffix."""
    stripped, style = prompt.strip(), style_text.strip()
    if "{prompt}" in style:
        left, _, right = style.partition("{prompt}")
        if stripped.startswith(left) and stripped.endswith(right):
            return True, stripped[len(left) : len(stripped) - len(right)]
        return False, prompt
    if not stripped.endswith(style):
        return False, prompt
    rest = stripped[: len(stripped) - len(style)]
    return True, rest[:-2] if rest.endswith(", ") else rest


def _strip_style(style: PromptStyle, prompt: str, negative: str) -> tuple[str, str] | None:
    if not style.prompt and not style.negative_prompt:
        return None
    ok, new_prompt = _strip_style_text(style.prompt, prompt)
    if not ok:
        return None
    ok, new_negative = _strip_style_text(style.negative_prompt, negative)
    return (new_prompt, new_negative) if ok else None


def extract_styles(
    styles: Iterable[PromptStyle], prompt: str, negative: str
) -> tuple[list[str], str, str]:
    """Repeatedly strip the first matching style; returns (names, last found first, prompt, negative)."""
    remaining = list(styles)
    found: list[str] = []
    while True:
        for style in remaining:
            stripped = _strip_style(style, prompt, negative)
            if stripped is not None:
                prompt, negative = stripped
                remaining.remove(style)
                found.append(style.name)
                break
        else:
            return found[::-1], prompt, negative


# --- prompt attention (only "does any piece have weight != 1") ---------------------------------------

_ATTENTION = re.compile(
    r"""
      \\[()\[\]\\]             # escaped bracket or backslash
    | \\                       # lone backslash
    | [(\[]                    # opening bracket
    | :\s*([+-]?[.\d]+)\s*\)   # ":weight)"
    | [)\]]                    # closing bracket
    | [^\\()\[\]:]+            # plain text
    | :                        # lone colon
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")


def split_break(text: str) -> list[str]:
    """``re.split(r"\\s*\\bBREAK\\b\\s*", text)`` in linear time (the regex is quadratic on long blanks)."""
    parts: list[str] = []
    last = 0
    for match in _BREAK_WORD.finditer(text):
        start = match.start()
        while start > last and text[start - 1].isspace():
            start -= 1
        end = match.end()
        while end < len(text) and text[end].isspace():
            end += 1
        parts.append(text[last:start])
        last = end
    parts.append(text[last:])
    return parts


def attention_pieces(text: str) -> list[tuple[str, float]]:
    """(text, weight) pieces of A1111's prompt-attention parse, adjacent equal weights merged.

    Raises ValueError for a weight such as ``1.2.3``, as A1111 does.
    """
    pieces: list[list[Any]] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token in ("(", "["):
            (open_round if token == "(" else open_square).append(len(pieces))
        elif weight is not None and open_round:
            scale(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            scale(open_round.pop(), 1.1)
        elif token == "]" and open_square:
            scale(open_square.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(split_break(token)):
                if i:
                    pieces.append(["BREAK", -1])
                pieces.append([part, 1.0])
    for start in open_round:
        scale(start, 1.1)
    for start in open_square:
        scale(start, 1 / 1.1)
    return _merge_equal(pieces or [["", 1.0]])


def _merge_equal(pieces: list[list[Any]]) -> list[tuple[str, float]]:
    merged: list[list[Any]] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


def uses_emphasis(*prompts: str) -> bool:
    """Whether any attention piece (BREAK aside) of the prompts has a weight other than 1.

    Only brackets change weights; bracket-heavy text costs O(pieces x brackets), as in A1111.
    """
    bracketed = (p for p in prompts if "(" in p or "[" in p)
    return any(text != "BREAK" and weight != 1.0 for p in bracketed for text, weight in attention_pieces(p))


# --- versions (PEP 440 ordering, as A1111's packaging.version) ---------------------------------------

_PEP440 = re.compile(
    r"""
    ^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PRE_LETTER = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc", "rc": "rc"}

VersionKey = tuple[Any, ...]


def version_key(text: str) -> VersionKey | None:
    """A sort key ordering versions as PEP 440 does; ``None`` when ``text`` is not a valid version."""
    m = _PEP440.match(text)
    if m is None:
        return None
    release = [int(part) for part in m["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    has_pre = m["pre_l"] is not None
    has_post = m["post_n1"] is not None or m["post_l"] is not None
    has_dev = m["dev_l"] is not None
    if has_pre:
        pre: tuple[Any, ...] = (1, _PRE_LETTER[m["pre_l"].lower()], int(m["pre_n"] or 0))
    else:
        pre = (0,) if has_dev and not has_post else (2,)
    post = (1, int(m["post_n1"] or m["post_n2"] or 0)) if has_post else (0,)
    dev = (0, int(m["dev_n"] or 0)) if has_dev else (1,)
    local: tuple[Any, ...] = (0,)
    if m["local"] is not None:
        parts = re.split(r"[-_.]", m["local"].lower())
        local = (1, tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts))
    return (int(m["epoch"] or 0), tuple(release), pre, post, dev, local)


def infotext_version(text: str | None) -> VersionKey | None:
    """A1111's ``infotext_versions.parse_version``: cut to the first two ``-`` parts, then PEP 440."""
    if text is None:
        return None
    cut = re.match(r"([^-]+-[^-]+)-.*", text)
    return version_key(cut.group(1) if cut else text)


def _v(text: str) -> VersionKey:
    key = version_key(text)
    assert key is not None
    return key


V160, V170_TSNR, V180, V180_HR_STYLES = _v("1.6.0"), _v("v1.7.0-225"), _v("1.8.0"), _v("1.8.0-139")


def _backcompat(res: dict[str, Any]) -> None:
    """Flags A1111 sets for infotexts written by older versions."""
    ver = infotext_version(res.get("Version"))
    if ver is None:
        return
    if ver < V160 and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < V160 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < V170_TSNR:
        res["Downcast alphas_cumprod"] = True
    if ver < V180 and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


# --- parse_infotext ---------------------------------------------------------------------------------


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
        _backcompat(res)
    for key in opts.skip_fields:
        res.pop(key, None)
    return res


def _emphasis_or_error(prompt: str, negative: str) -> bool:
    try:
        return uses_emphasis(prompt, negative)
    except ValueError as exc:
        raise InvalidRequestError(f"infotext prompt has an invalid attention weight ({exc}); fix the weight") from exc


# ---------------------------------------------------------------------------------------------------
# Parsed infotext -> request fields
# ---------------------------------------------------------------------------------------------------

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
