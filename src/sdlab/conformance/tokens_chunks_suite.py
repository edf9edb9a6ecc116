"""tokens_chunks.json: tokenizer ids per parsed piece and A1111's ``tokenize_line`` chunks.

Per case: the parsed pieces (attention parser, or the whole prompt with emphasis "None"), the token ids of
each piece (slow CLIP tokenizer + ftfy), ``token_count`` and every chunk's 77 tokens and multipliers, all exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdlab.conformance import VectorSuite
from sdlab.prompt.chunk import tokenize_line
from sdlab.prompt.encode_emphasis import EMPHASIS_MODES
from sdlab.prompt.parse import parse_prompt_attention
from sdlab.prompt.tokenizer import ClipTokenizer


def _prepare(data: dict[str, Any], vectors_dir: Path) -> ClipTokenizer:
    tokenizer = ClipTokenizer.bundled("clip")
    for key, expected in (("id_start", tokenizer.bos_id), ("id_end", tokenizer.eos_id), ("comma_token", tokenizer.comma_id)):
        if key in data and data[key] != expected:
            raise AssertionError(f"vector file {key}={data[key]} but the bundled tokenizer has {expected}")
    return tokenizer


def _cases(data: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for index, case in enumerate(data["cases"]):
        yield f"{case.get('group', 'case')}-{case.get('id', index)}", case


def _check(case: dict[str, Any], tokenizer: ClipTokenizer) -> None:
    prompt, opts = case["prompt"], case.get("opts", {})
    emphasis = opts.get("emphasis", "Original")
    backtrack = int(opts.get("comma_padding_backtrack", 20))
    parsed = parse_prompt_attention(prompt) if EMPHASIS_MODES.get(emphasis).parse else [(prompt, 1.0)]
    assert [[t, w] for t, w in parsed] == case["parsed"], f"parsed: expected {case['parsed']!r}, got {parsed!r}"
    ids = tokenizer.encode_many([t for t, _ in parsed])
    assert ids == case["piece_token_ids"], f"piece ids: expected {case['piece_token_ids']!r}, got {ids!r}"
    line = tokenize_line(prompt, tokenizer, emphasis=emphasis, comma_padding_backtrack=backtrack)
    assert line.token_count == case["token_count"], f"token_count: expected {case['token_count']}, got {line.token_count}"
    expected = case["chunks"]
    assert len(line.chunks) == len(expected), f"expected {len(expected)} chunks, got {len(line.chunks)}"
    for index, (got, want) in enumerate(zip(line.chunks, expected)):
        assert list(got.tokens) == want["tokens"], f"chunk {index} tokens: expected {want['tokens']}, got {list(got.tokens)}"
        mults = [float(m) for m in want["multipliers"]]
        assert list(got.multipliers) == mults, f"chunk {index} multipliers: expected {mults}, got {list(got.multipliers)}"
    return None


SUITE = VectorSuite(file="tokens_chunks.json", cases=_cases, check=_check, prepare=_prepare)
