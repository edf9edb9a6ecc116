"""Splitting an infotext into prompt, negative prompt and ``Key: value`` pairs; A1111 styles."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

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
