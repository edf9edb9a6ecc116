"""A1111's ``tokenize_line``: a prompt -> 77-token chunks (BOS + 75 + EOS) with per-token multipliers.

Rules (``sd_hijack_clip.py`` v1.10.1): the prompt is attention-parsed (unless emphasis is ``None``), each
piece tokenized, tokens appended with their piece's weight. A piece ``("BREAK", -1.0)`` closes the chunk
(even an empty one). Commas remember their position; when a non-comma token arrives at a full chunk and
the last comma is within ``comma_padding_backtrack`` tokens of the end, the tokens after the comma move
to the next chunk. A full chunk is closed before appending. Closing pads with EOS (multiplier 1.0) to 75
and wraps in BOS/EOS. A final chunk is emitted if it holds tokens or no chunk exists yet.

Textual inversion: an optional :class:`EmbeddingLookup` is asked at each token position; a hit of ``n``
vectors occupies ``n`` slots (token id 0, the piece's weight) of one chunk - if it does not fit, the chunk
is closed first - and is recorded as an :class:`EmbeddingSlot` for the encoder to write its vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sdlab.errors import InvalidRequestError
from sdlab.prompt.encode_emphasis import DEFAULT_EMPHASIS, EMPHASIS_MODES
from sdlab.prompt.parse import BREAK_WEIGHT, parse_prompt_attention

CHUNK_LENGTH = 75
DEFAULT_COMMA_BACKTRACK = 20
EMBEDDING_PLACEHOLDER_ID = 0


@dataclass(frozen=True)
class EmbeddingMatch:
    """A textual-inversion embedding found in the token stream.

    ``vectors`` maps an encoder width (768, 1024, 1280...) to a [n, width] tensor (same n for every width);
    ``trigger_length`` is how many prompt tokens its trigger word occupies (>= 1).
    """

    name: str
    vectors: Mapping[int, torch.Tensor]
    trigger_length: int

    @property
    def vector_count(self) -> int:
        counts = {int(v.shape[0]) for v in self.vectors.values()}
        if len(counts) != 1 or min(counts) < 1:
            raise InvalidRequestError(f"embedding {self.name!r} has inconsistent or empty vectors: {sorted(counts)}")
        return counts.pop()

    def for_width(self, width: int) -> torch.Tensor:
        if width not in self.vectors:
            raise InvalidRequestError(
                f"embedding {self.name!r} has no vectors for a {width}-wide text encoder "
                f"(it has {sorted(self.vectors)}); it was made for another model family"
            )
        return self.vectors[width]


class EmbeddingLookup(Protocol):
    """Finds the embedding whose trigger starts at ``token_ids[position]``, or returns None."""

    def find(self, token_ids: Sequence[int], position: int) -> EmbeddingMatch | None: ...


class Tokenizer(Protocol):
    """What the chunker needs of a tokenizer (see :class:`sdlab.prompt.tokenizer.ClipTokenizer`)."""

    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def comma_id(self) -> int: ...
    def encode_many(self, texts: list[str]) -> list[list[int]]: ...


@dataclass(frozen=True)
class EmbeddingSlot:
    """``match``'s vectors go to positions ``offset .. offset+n-1`` of a 77-token chunk (BOS is 0)."""

    offset: int
    match: EmbeddingMatch


@dataclass(frozen=True)
class PromptChunk:
    """One chunk: 77 ``tokens`` (BOS, 75, EOS), 77 ``multipliers``, embedding slots."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]
    embeddings: tuple[EmbeddingSlot, ...] = ()


@dataclass(frozen=True)
class TokenizedLine:
    """``chunks`` of a prompt and A1111's ``token_count`` (75 per non-final chunk + final real tokens)."""

    chunks: tuple[PromptChunk, ...]
    token_count: int


def empty_chunk(bos_id: int, eos_id: int) -> PromptChunk:
    """The padding chunk A1111 appends to shorter texts of a batch: BOS + 76 EOS, multipliers 1.0."""
    return PromptChunk((bos_id,) + (eos_id,) * (CHUNK_LENGTH + 1), (1.0,) * (CHUNK_LENGTH + 2))


@dataclass
class _Builder:
    bos_id: int
    eos_id: int
    chunks: list[PromptChunk] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    slots: list[tuple[int, EmbeddingMatch]] = field(default_factory=list)
    last_comma: int = -1
    token_count: int = 0

    def close(self, is_last: bool = False) -> None:
        self.token_count += len(self.tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(self.tokens)
        tokens = [self.bos_id, *self.tokens, *[self.eos_id] * pad, self.eos_id]
        weights = [1.0, *self.weights, *[1.0] * pad, 1.0]
        slots = tuple(EmbeddingSlot(offset + 1, match) for offset, match in self.slots)
        self.chunks.append(PromptChunk(tuple(tokens), tuple(weights), slots))
        self.tokens, self.weights, self.slots, self.last_comma = [], [], [], -1

    def backtrack_to_comma(self) -> None:
        """Move the tokens after the last comma (and embedding slots among them) to a new chunk.

        Deliberate deviation: A1111 moves the placeholder tokens but leaves the embedding's fix in the
        closed chunk (its vectors then land on padding); sdlab moves the slot with its tokens.
        """
        cut = self.last_comma + 1
        moved = self.tokens[cut:], self.weights[cut:]
        moved_slots = [(offset - cut, match) for offset, match in self.slots if offset >= cut]
        self.slots = [(offset, match) for offset, match in self.slots if offset < cut]
        self.tokens, self.weights = self.tokens[:cut], self.weights[:cut]
        self.close()
        self.tokens, self.weights, self.slots = list(moved[0]), list(moved[1]), moved_slots


def _pieces(text: str, emphasis: str) -> list[tuple[str, float]]:
    if EMPHASIS_MODES.get(emphasis).parse:
        return parse_prompt_attention(text)
    return [(text, 1.0)]


def _check_backtrack(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= CHUNK_LENGTH - 1:
        raise InvalidRequestError(f"comma_padding_backtrack must be an integer 0..{CHUNK_LENGTH - 1}, got {value!r}")
    return value


def tokenize_line(
    text: str,
    tokenizer: Tokenizer,
    *,
    emphasis: str = DEFAULT_EMPHASIS,
    comma_padding_backtrack: int = DEFAULT_COMMA_BACKTRACK,
    embeddings: EmbeddingLookup | None = None,
) -> TokenizedLine:
    """Chunk ``text`` like A1111's ``tokenize_line`` (see module docstring).

    ``emphasis``: a name in :data:`EMPHASIS_MODES` (only ``None`` changes tokenization: no parsing).
    ``comma_padding_backtrack``: 0..74 tokens (0 disables). Raises InvalidRequestError on bad input.
    """
    backtrack = _check_backtrack(comma_padding_backtrack)
    pieces = _pieces(text, emphasis)
    token_lists = tokenizer.encode_many([piece for piece, _ in pieces])
    builder = _Builder(tokenizer.bos_id, tokenizer.eos_id)
    comma = tokenizer.comma_id
    for ids, (piece, weight) in zip(token_lists, pieces):
        if piece == "BREAK" and weight == BREAK_WEIGHT:
            builder.close()
            continue
        position = 0
        while position < len(ids):
            token = ids[position]
            if token == comma:
                builder.last_comma = len(builder.tokens)
            elif (
                backtrack
                and len(builder.tokens) == CHUNK_LENGTH
                and builder.last_comma != -1
                and CHUNK_LENGTH - builder.last_comma <= backtrack
            ):
                builder.backtrack_to_comma()
            if len(builder.tokens) == CHUNK_LENGTH:
                builder.close()
            position += _append(builder, ids, position, weight, embeddings)
    if builder.tokens or not builder.chunks:
        builder.close(is_last=True)
    return TokenizedLine(tuple(builder.chunks), builder.token_count)


def _append(builder: _Builder, ids: list[int], position: int, weight: float, lookup: EmbeddingLookup | None) -> int:
    """Append the token (or embedding) at ``position``; return how many prompt tokens were consumed."""
    match = lookup.find(ids, position) if lookup is not None else None
    if match is None:
        builder.tokens.append(ids[position])
        builder.weights.append(weight)
        return 1
    count = match.vector_count
    if count > CHUNK_LENGTH:
        raise InvalidRequestError(
            f"embedding {match.name!r} has {count} vectors; at most {CHUNK_LENGTH} fit in one chunk"
        )
    if len(builder.tokens) + count > CHUNK_LENGTH:
        builder.close()
    builder.slots.append((len(builder.tokens), match))
    builder.tokens.extend([EMBEDDING_PLACEHOLDER_ID] * count)
    builder.weights.extend([weight] * count)
    return max(1, match.trigger_length)
