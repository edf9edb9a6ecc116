"""CLIP byte-level BPE tokenizer with A1111's text normalisation, from the bundled vocabulary.

Two variants (:data:`TOKENIZER_VARIANTS`), both on the same 49408-id vocabulary:

* ``"clip"`` - what A1111 uses for SD1.x and SDXL's CLIP-L: transformers 4.30's *slow* ``CLIPTokenizer``
  with ftfy installed. The text is first split on the literal special tokens ``<|startoftext|>`` /
  ``<|endoftext|>`` (exact case; they become ids 49406 / 49407); every other segment gets
  ``ftfy.fix_text`` (fullwidth -> ASCII, curly quotes -> straight, ligatures split, HTML entities,
  mojibake), whitespace collapsed and stripped, lowercased, then split by CLIP's regex (which also
  recognises the special tokens case-insensitively) and byte-level BPE.
  transformers >= 5's tokenizers-backed ``CLIPTokenizer`` skips ftfy and differs on such inputs, hence
  this own implementation (it equals A1111 on every case of ``tokens_chunks.json``).
* ``"open_clip"`` - what A1111 uses for SD2.x's OpenCLIP-H and SDXL's OpenCLIP-bigG: open_clip's
  ``SimpleTokenizer.encode``: ``ftfy.fix_text``, ``html.unescape`` twice, strip, whitespace collapse,
  lowercase, no special-token pre-split; its special tokens are spelled ``<start_of_text>`` /
  ``<end_of_text>`` (same ids 49406 / 49407). Padding with id 0 is the chunker's/encoder's business.

A tokenizer keeps a per-instance BPE cache, so build one per Engine (:meth:`ClipTokenizer.bundled`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import ftfy
import regex

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry

BOS_ID = 49406
EOS_ID = 49407
COMMA_TOKEN = ",</w>"
_WORD_END = "</w>"
_WHITESPACE = regex.compile(r"\s+")
_PIECE_TAIL = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def _byte_alphabet() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character table (256 entries)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _hf_slow_clean(text: str) -> str:
    return _collapse_whitespace(ftfy.fix_text(text)).lower()


def _open_clip_clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _collapse_whitespace(text).lower()


@dataclass(frozen=True)
class TokenizerVariant:
    """Text normalisation and special-token spelling of one tokenizer flavour."""

    clean: Callable[[str], str]
    special_tokens: tuple[str, str]  # spelling of (start, end) in prompts
    presplit_specials: bool  # split literal special tokens out before cleaning (HF slow tokenizer)


TOKENIZER_VARIANTS: Registry[TokenizerVariant] = Registry.of(
    "tokenizer variant",
    [
        ("clip", TokenizerVariant(_hf_slow_clean, ("<|startoftext|>", "<|endoftext|>"), True)),
        ("open_clip", TokenizerVariant(_open_clip_clean, ("<start_of_text>", "<end_of_text>"), False)),
    ],
)


def _bundled_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    base = resources.files("sdlab") / "data" / "clip_bpe"
    vocab = json.loads((base / "vocab.json").read_text(encoding="utf-8"))
    lines = (base / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    return vocab, merges  # type: ignore[return-value]


@dataclass
class ClipTokenizer:
    """CLIP BPE tokenizer; :meth:`encode` returns ids without BOS/EOS and without truncation.

    ``vocab`` maps BPE strings to ids (ids 49406/49407 are start/end), ``merges`` are ranked pairs.
    """

    vocab: Mapping[str, int] = field(repr=False)
    merges: Sequence[tuple[str, str]] = field(repr=False)
    variant: str = "clip"
    _ranks: dict[tuple[str, str], int] = field(init=False, repr=False)
    _cache: dict[str, tuple[int, ...]] = field(init=False, repr=False)
    _pattern: regex.Pattern = field(init=False, repr=False)
    _splitter: regex.Pattern = field(init=False, repr=False)
    _bytes: dict[int, str] = field(init=False, repr=False)
    _spec: TokenizerVariant = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._spec = TOKENIZER_VARIANTS.get(self.variant)
        self.variant = TOKENIZER_VARIANTS.canonical(self.variant)
        if len(self.vocab) <= EOS_ID:
            raise InvalidRequestError(f"CLIP vocabulary has {len(self.vocab)} entries; expected {EOS_ID + 1}")
        self._ranks = {tuple(pair): rank for rank, pair in enumerate(self.merges)}
        start, end = self._spec.special_tokens
        self._cache = {start: (BOS_ID,), end: (EOS_ID,)}
        specials = "|".join(regex.escape(s) for s in self._spec.special_tokens)
        self._pattern = regex.compile(f"{specials}|{_PIECE_TAIL}", regex.IGNORECASE)
        self._splitter = regex.compile(f"({specials})")
        self._bytes = _byte_alphabet()

    @classmethod
    def bundled(cls, variant: str = "clip") -> ClipTokenizer:
        """The tokenizer over the vocabulary shipped in ``sdlab/data/clip_bpe`` (CLIP ViT-L/14 ids)."""
        vocab, merges = _bundled_files()
        return cls(vocab, merges, variant)

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def comma_id(self) -> int:
        """Id of ``,</w>`` (267 in the CLIP vocabulary)."""
        return self.vocab[COMMA_TOKEN]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS, no truncation)."""
        ids: list[int] = []
        for segment, is_special in self._segments(text):
            if is_special:
                ids.append(BOS_ID if segment == self._spec.special_tokens[0] else EOS_ID)
                continue
            for word in self._pattern.findall(self._spec.clean(segment)):
                ids.extend(self._word_ids(word))
        return ids

    def encode_many(self, texts: Iterable[str]) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(text) for text in texts]

    def _segments(self, text: str) -> list[tuple[str, bool]]:
        if not self._spec.presplit_specials:
            return [(text, False)]
        parts = self._splitter.split(text)
        return [(part, index % 2 == 1) for index, part in enumerate(parts) if part]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        encoded = "".join(self._bytes[b] for b in word.encode("utf-8"))
        ids = tuple(self.vocab[piece] for piece in self._bpe(encoded))
        self._cache[word] = ids
        return ids

    def _bpe(self, token: str) -> list[str]:
        parts = [*token[:-1], token[-1] + _WORD_END]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
            if best not in self._ranks:
                break
            parts = _merge_pair(parts, best)
        return parts


def _merge_pair(parts: list[str], pair: tuple[str, str]) -> list[str]:
    merged: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i] == pair[0] and parts[i + 1] == pair[1]:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged
