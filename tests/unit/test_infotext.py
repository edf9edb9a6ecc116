"""Unit tests for sdlab.infotext: A1111 infotext writing, parsing and request-field mapping."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.infotext import (
    REQUEST_FIELDS,
    InfotextSettings,
    ParseOptions,
    PromptStyle,
    attention_pieces,
    create_infotext,
    extract_styles,
    format_params,
    infotext_params,
    infotext_to_request_fields,
    infotext_version,
    old_hires_first_pass_size,
    parse_infotext,
    param_pairs,
    parse_param_line,
    quote,
    sampler_uses_ensd,
    split_break,
    split_infotext,
    uses_emphasis,
    version_key,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "conformance"


def _settings(**overrides: object) -> InfotextSettings:
    base: dict[str, object] = dict(steps=20, sampler_name="Euler", cfg_scale=7, seed=1, width=512, height=512)
    base.update(overrides)
    return InfotextSettings(**base)  # type: ignore[arg-type]


# --- writing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("a:b", '"a:b"'),
        ("x\ny", '"x\\ny"'),
        ('say "hi"', 'say "hi"'),
        ('q "a", b', '"q \\"a\\", b"'),
        ("猫, 犬", '"猫, 犬"'),
        ("back\\slash: x", '"back\\\\slash: x"'),
        (7.0, "7.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (True, "True"),
        (0, "0"),
    ],
)
def test_quote(value: object, expected: str) -> None:
    assert quote(value) == expected


def test_quote_unserialisable_value_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="cannot be written as JSON"):
        quote({1, 2})


def test_format_params_drops_none_and_writes_bare_flags() -> None:
    text = format_params({"Steps": 20, "Skip": None, "Flag": "Flag", "Empty": "", "Colon": "a: 1"})
    assert text == 'Steps: 20, Flag, Empty: , Colon: "a: 1"'


def test_create_infotext_negative_line_only_when_non_empty() -> None:
    assert create_infotext("cat", "", {"Steps": 20}) == "cat\nSteps: 20"
    assert create_infotext("cat", "dog", {"Steps": 20}) == "cat\nNegative prompt: dog\nSteps: 20"
    assert create_infotext("", "", {"Steps": 20}) == "Steps: 20"
    assert create_infotext("  cat", "", {}) == "cat"


def test_infotext_params_order_and_omissions() -> None:
    params = infotext_params(_settings(scheduler="Karras", model_hash="abc", model_name="m", version="v1.10.1"))
    assert list(k for k, v in params.items() if v is not None) == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "Version",
    ]  # fmt: skip
    assert params["Size"] == "512x512"


def test_extra_params_keep_fixed_slot_and_follow_in_insertion_order() -> None:
    extra = (("Hires upscale", 2), ("Denoising strength", 0.7), ("Schedule type", "Exponential"), ("Lora hashes", "a: 1"))
    params = infotext_params(_settings(extra=extra, version="v1.10.1", user="bob"))
    keys = [k for k, v in params.items() if v is not None]
    assert keys == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Denoising strength",
        "Hires upscale", "Lora hashes", "Version", "User",
    ]  # fmt: skip
    assert params["Schedule type"] == "Exponential"


def test_extra_none_drops_fixed_value() -> None:
    params = infotext_params(_settings(model_name="m", extra=(("Model", None),)))
    assert "Model:" not in format_params(params)


def test_conditional_fields() -> None:
    s = _settings(
        subseed=99, subseed_strength=0.25, seed_resize_from=(256, 0), clip_skip=2, rng="CPU", tiling=True,
        token_merging_ratio=0.3, token_merging_ratio_hr=0.5, enable_hr=False, ensd=31337,
    )  # fmt: skip
    text = format_params(infotext_params(s))
    assert "Variation seed: 99, Variation seed strength: 0.25" in text
    assert "Seed resize from" not in text  # h <= 0
    assert "Clip skip: 2" in text and "RNG: CPU" in text and "Tiling: True" in text
    assert "Token merging ratio: 0.3" in text and "Token merging ratio hr" not in text
    assert "ENSD" not in text  # Euler does not use ENSD
    text_a = format_params(infotext_params(_settings(sampler_name="Euler a", ensd=31337, seed_resize_from=(256, 320))))
    assert "ENSD: 31337" in text_a and "Seed resize from: 256x320" in text_a


@pytest.mark.parametrize(
    ("sampler", "eta", "expected"),
    [("Euler a", None, True), ("euler A", 1.0, True), ("DPM2 a", 0.0, False), ("k_dpm_ad", None, True),
     ("DPM++ 2M", None, False), ("DDIM", 1.0, False)],
)  # fmt: skip
def test_sampler_uses_ensd(sampler: str, eta: float | None, expected: bool) -> None:
    assert sampler_uses_ensd(sampler, eta) is expected


def test_round_trip_write_then_parse() -> None:
    extra = (("Hires prompt", "hi, res\nline"), ("Weird", 'a "b": c\\d'), ("Lora hashes", "x: 1, y: 2"))
    text = create_infotext("a cat\nsecond line", "ugly, (bad:1.2)", infotext_params(_settings(extra=extra)))
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a cat\nsecond line"
    assert parsed["Negative prompt"] == "ugly, (bad:1.2)"
    assert parsed["Hires prompt"] == "hi, res\nline"
    assert parsed["Weird"] == 'a "b": c\\d'
    assert parsed["Lora hashes"] == "x: 1, y: 2"
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Steps"]) == ("512", "512", "20")
    assert parsed["Emphasis"] == "Original"


# --- parsing ---------------------------------------------------------------------------------------------


def test_param_line_needs_three_matches() -> None:
    assert split_infotext("p\nSteps: 20, Sampler: Euler") == ("p\nSteps: 20, Sampler: Euler", "", "")
    assert split_infotext("p\nSteps: 20, Sampler: Euler, x: 1, ab: 2")[2] == "Steps: 20, Sampler: Euler, x: 1, ab: 2"


def test_parse_param_line_details() -> None:
    res = parse_param_line('A: 1, Empty: , Size: 64x32, Qq: "x, y", Bad: "\\q", Trail: v  , Sz: "8x9"')
    assert res == {"Size-1": "64", "Size-2": "32", "Qq": "x, y", "Bad": '"\\q"', "Trail": "v  ", "Sz-1": "8", "Sz-2": "9"}


def test_negative_prompt_lines_and_blank_lines() -> None:
    parsed = parse_infotext("\n a \n\nb\nNegative prompt:  n1 \nmore\nSteps: 1, Sampler: E, CFG scale: 2")
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("a\n\nb", "n1\nmore")


def test_defaults_and_types() -> None:
    parsed = parse_infotext("cat")
    assert parsed["Clip skip"] == "1" and parsed["Hires resize-1"] == 0 and parsed["Masked area padding"] == 32
    assert parsed["Refiner switch by sampling steps"] is False
    assert "Cache FP16 weight for LoRA" not in parsed and "Emphasis" not in parsed
    fp8 = parse_infotext("cat\nSteps: 1, Sampler: E, FP8 weight: Enable")
    assert fp8["Cache FP16 weight for LoRA"] is False


def test_hypernet_appended_to_prompt() -> None:
    parsed = parse_infotext("cat\nSteps: 1, Hypernet: h1, Hypernet strength: 0.5")
    assert parsed["Prompt"] == "cat<hypernet:h1:0.5>"


def test_old_first_pass_size_conversion() -> None:
    parsed = parse_infotext("cat\nSteps: 1, Size: 1024x768, First pass size: 0x0")
    assert (parsed["Size-1"], parsed["Size-2"]) == old_hires_first_pass_size(1024, 768) == (640, 448)
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (1024, 768)
    explicit = parse_infotext("cat\nSteps: 1, Size: 1024x768, First pass size: 512x384")
    assert (explicit["Size-1"], explicit["Size-2"]) == (512, 384)


def test_use_old_hires_fix_width_height_option() -> None:
    text = "cat\nSteps: 1, Size: 512x512, Hires resize: 1024x1024"
    parsed = parse_infotext(text, ParseOptions(use_old_hires_fix_width_height=True))
    assert (parsed["Size-1"], parsed["Size-2"]) == (1024, 1024)


def test_skip_fields_and_backcompat_switch() -> None:
    text = "[a:b:3]\nSteps: 1, Sampler: DDIM, CFG scale: 7, Version: v1.5.0"
    parsed = parse_infotext(text)
    assert parsed["Old prompt editing timelines"] is True and parsed["Pad conds v0"] is True
    quiet = parse_infotext(text, ParseOptions(auto_backcompat=False, skip_fields=("Sampler", "Clip skip")))
    assert "Pad conds v0" not in quiet and "Sampler" not in quiet and "Clip skip" not in quiet


def test_invalid_weight_raises_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="weight"):
        parse_infotext("(a:1.2.3)\nSteps: 1, Sampler: E, CFG scale: 7")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("plain", False), (r"\(escaped\)", False), ("(a:1.0)", False), ("[a]", True), ("a BREAK b", False),
     ("(a BREAK b:1)", False), ("((a))", True), ("(a", True), ("", False)],
)  # fmt: skip
def test_uses_emphasis(prompt: str, expected: bool) -> None:
    assert uses_emphasis(prompt) is expected


def test_attention_pieces_match_a1111_vectors() -> None:
    path = VECTORS / "prompt_attention.json"
    if not path.is_file():
        pytest.skip("prompt_attention.json vectors not present")
    for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
        if "error" in case:
            with pytest.raises(ValueError):
                attention_pieces(case["input"])
        else:
            assert [list(p) for p in attention_pieces(case["input"])] == case["output"], case["input"]


# --- styles ----------------------------------------------------------------------------------------------

STYLES = (PromptStyle("Cine", "cinematic {prompt}, film", "cartoon"), PromptStyle("Q", "best quality"))


def test_extract_styles_order_and_leftovers() -> None:
    found, prompt, negative = extract_styles(STYLES, "cinematic cat, best quality, film", "blurry, cartoon")
    assert (found, prompt, negative) == (["Q", "Cine"], "cat", "blurry")


@pytest.mark.parametrize(("mode", "has_array", "prompt"), [("Ignore", False, "cat, best quality"),
                                                          ("Discard", False, "cat"), ("Apply", True, "cat")])
def test_infotext_styles_modes(mode: str, has_array: bool, prompt: str) -> None:
    parsed = parse_infotext("cat, best quality\nSteps: 1, Sampler: E, CFG scale: 7", ParseOptions(styles=STYLES, infotext_styles=mode))
    assert ("Styles array" in parsed) is has_array and parsed["Prompt"] == prompt


def test_apply_mode_writes_empty_array_without_match() -> None:
    parsed = parse_infotext("dog\nSteps: 1, Sampler: E, CFG scale: 7", ParseOptions(styles=STYLES, infotext_styles="Apply"))
    assert parsed["Styles array"] == []


def test_hires_styles_differ_keeps_styles_in_prompt() -> None:
    text = 'cat, best quality\nSteps: 1, Sampler: E, Hires prompt: "dog", Version: v1.10.1'
    parsed = parse_infotext(text, ParseOptions(styles=STYLES))
    assert parsed["Prompt"] == "cat, best quality" and "Styles array" not in parsed


# --- versions --------------------------------------------------------------------------------------------

VERSION_STRINGS = [
    "1.6.0", "v1.6.0", "1.6", "1.6.0.0", "v1.7.0-225", "1.7.0.post224", "1.7.0-RC", "1.7.0rc1", "1.7.0a", "1.7.0b2",
    "1.7.0.dev3", "1.7.0-dev", "1.7.0+local.7", "1.7.0+abc", "1!0.1", "1.8.0-139", "1.8.0-140", "1.10.1", "1.9.0-RC",
    "1.7.0-pre", "1.7.0preview2", "1.7.0c1", "1.7.0rev3", "1.7.0-r", "1.7.0.post", "1.7.0-RC-5", " 1.2 ",
    "garbage", "1.7.0-", "1..0", "v", "",
]  # fmt: skip


def test_version_key_matches_packaging() -> None:
    packaging_version = pytest.importorskip("packaging.version")
    parsed = {}
    for text in VERSION_STRINGS:
        try:
            ref = packaging_version.Version(text)
        except packaging_version.InvalidVersion:
            assert version_key(text) is None, text
            continue
        assert version_key(text) is not None, text
        parsed[text] = ref
    for a in parsed:
        for b in parsed:
            assert (version_key(a) < version_key(b)) == (parsed[a] < parsed[b]), (a, b)  # type: ignore[operator]
            assert (version_key(a) == version_key(b)) == (parsed[a] == parsed[b]), (a, b)


def test_infotext_version_cuts_git_describe() -> None:
    assert infotext_version("v1.7.0-224-g1234567") == version_key("1.7.0.post224")
    assert infotext_version("f2.0.1v1.10.1-previous-313-g8a042934") is None
    assert infotext_version(None) is None


# --- request fields ---------------------------------------------------------------------------------------


def test_infotext_to_request_fields() -> None:
    text = (
        "cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: -1, Size: 640x512, "
        'Variation seed: 5, Variation seed strength: 0.1, Lora hashes: "a: 111, b:c: 222", Tiling: True, '
        "Hires upscale: 2, Hires steps: 10, Custom thing: 3"
    )
    known, unknown = infotext_to_request_fields(parse_infotext(text))
    assert known["prompt"] == "cat" and known["negative_prompt"] == "dog"
    assert (known["steps"], known["cfg_scale"], known["seed"]) == (20, 7.5, -1)
    assert (known["width"], known["height"], known["clip_skip"]) == (640, 512, 1)
    assert (known["subseed"], known["subseed_strength"]) == (5, 0.1)
    assert known["lora_hashes"] == {"a": "111", "b:c": "222"}
    assert known["tiling"] is True and known["hr_scale"] == 2.0 and known["hr_second_pass_steps"] == 10
    assert known["hr_sampler"] is None and known["hr_scheduler"] is None and known["hr_checkpoint"] is None
    assert (known["hr_resize_x"], known["hr_resize_y"]) == (0, 0)
    assert unknown == {"Custom thing": "3"}


#: request fields A1111 writes under more than one key (the sampler decides which one)
SHARED_FIELDS = {"eta": {"Eta", "Eta DDIM"}}


def test_request_field_table_is_one_to_one() -> None:
    keys = [m.key for m in REQUEST_FIELDS]
    assert len(set(keys)) == len(keys)
    by_field: dict[str, set[str]] = {}
    for m in REQUEST_FIELDS:
        by_field.setdefault(m.field, set()).add(m.key)
    shared = {f: k for f, k in by_field.items() if len(k) > 1}
    assert shared == SHARED_FIELDS


@pytest.mark.parametrize(("key", "value"), [("Steps", "twenty"), ("CFG scale", "nan"), ("Tiling", "maybe"),
                                            ("Lora hashes", "nohash"), ("Seed", True)])  # fmt: skip
def test_bad_values_raise_invalid_request(key: str, value: object) -> None:
    with pytest.raises(InvalidRequestError, match=key):
        infotext_to_request_fields({key: value})


# --- linear-time scanners agree with A1111's regexes -------------------------------------------------------

A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
ALPHABET = ['a', 'Z', '9', '_', ' ', '\t', '-', '/', ':', ',', '"', '\\', 'x', '猫', '\n', 'BREAK', ' BREAK ', '(']


def _random_strings(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(ALPHABET) for _ in range(rnd.randrange(0, 40))) for _ in range(count)]


def test_param_pairs_equals_a1111_regex() -> None:
    samples = _random_strings(1, 4000) + ['ab: "x\\"y", cd: "q" z, ef:  v \n', 'ab: "unterminated, cd: 1', 'ab: "x"\n']
    for text in samples:
        assert param_pairs(text) == A1111_PARAM.findall(text), repr(text)


def test_split_break_equals_a1111_regex() -> None:
    for text in _random_strings(2, 4000) + ["a BREAK b", "BREAKBREAK BREAK", "\tBREAK\n\nBREAK x"]:
        assert split_break(text) == A1111_BREAK.split(text), repr(text)
