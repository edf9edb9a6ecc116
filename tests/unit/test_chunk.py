"""tokenize_line: chunk layout, BREAK, comma backtracking and textual-inversion slots."""

from __future__ import annotations

import pytest
import torch
from helpers.embedding_lookup import FakeLookup

from sdlab.errors import InvalidRequestError
from sdlab.prompt.chunk import CHUNK_LENGTH, empty_chunk, tokenize_line
from sdlab.prompt.tokenizer import BOS_ID, EOS_ID, ClipTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.bundled()


def test_every_chunk_is_bos_75_eos(tokenizer: ClipTokenizer) -> None:
    line = tokenize_line("cat " * 160, tokenizer)
    assert [len(c.tokens) for c in line.chunks] == [77, 77, 77]
    assert all(c.tokens[0] == BOS_ID and c.tokens[-1] == EOS_ID for c in line.chunks)
    assert line.token_count == 160


def test_break_and_empty(tokenizer: ClipTokenizer) -> None:
    assert tokenize_line("", tokenizer).token_count == 0
    assert len(tokenize_line("", tokenizer).chunks) == 1
    line = tokenize_line("a BREAK b", tokenizer)
    assert len(line.chunks) == 2 and line.token_count == 76
    inside = tokenize_line("(a BREAK b)", tokenizer)
    assert len(inside.chunks) == 1 and pytest.approx(-1.1) in inside.chunks[0].multipliers


def test_comma_backtrack_moves_tail(tokenizer: ClipTokenizer) -> None:
    text = "cat " * 70 + ", " + "dog " * 10
    moved = tokenize_line(text, tokenizer, comma_padding_backtrack=20)
    assert moved.chunks[0].tokens[71] == tokenizer.comma_id and moved.chunks[0].tokens[72] == EOS_ID
    kept = tokenize_line(text, tokenizer, comma_padding_backtrack=0)
    assert kept.chunks[0].tokens[72] != EOS_ID


def test_emphasis_none_keeps_brackets(tokenizer: ClipTokenizer) -> None:
    line = tokenize_line("(cat:1.5) BREAK x", tokenizer, emphasis="None")
    assert len(line.chunks) == 1 and set(line.chunks[0].multipliers) == {1.0}
    with pytest.raises(InvalidRequestError):
        tokenize_line("x", tokenizer, emphasis="loud")
    with pytest.raises(InvalidRequestError):
        tokenize_line("x", tokenizer, comma_padding_backtrack=-1)


def test_three_vector_embedding_is_not_split_at_chunk_boundary(tokenizer: ClipTokenizer) -> None:
    trigger = tokenizer.encode("zzqemb")
    lookup = FakeLookup(trigger, torch.zeros(3, 32))
    line = tokenize_line("cat " * 73 + "(zzqemb:1.3) dog", tokenizer, embeddings=lookup)
    first, second = line.chunks
    assert first.embeddings == () and first.tokens[74:] == (EOS_ID, EOS_ID, EOS_ID)  # closed and padded early
    assert [s.offset for s in second.embeddings] == [1]
    assert second.tokens[1:4] == (0, 0, 0) and second.multipliers[1:4] == (1.3, 1.3, 1.3)
    assert second.tokens[4] == tokenizer.encode("dog")[0]
    assert line.token_count == 75 + 4


def test_embedding_that_fits_stays_in_chunk(tokenizer: ClipTokenizer) -> None:
    trigger = tokenizer.encode("zzqemb")
    line = tokenize_line("cat " * 72 + "zzqemb", tokenizer, embeddings=FakeLookup(trigger, torch.zeros(3, 32)))
    assert len(line.chunks) == 1 and line.chunks[0].embeddings[0].offset == 73
    assert line.token_count == 75


def test_comma_backtrack_moves_embedding_slot_with_its_tokens(tokenizer: ClipTokenizer) -> None:
    trigger = tokenizer.encode("zzqemb")
    line = tokenize_line("cat " * 65 + ", zzqemb " + "dog " * 10, tokenizer, embeddings=FakeLookup(trigger, torch.zeros(3, 32)))
    first, second = line.chunks
    assert first.embeddings == ()
    assert [s.offset for s in second.embeddings] == [1] and second.tokens[1:4] == (0, 0, 0)


def test_oversized_embedding_is_rejected(tokenizer: ClipTokenizer) -> None:
    trigger = tokenizer.encode("zzqemb")
    with pytest.raises(InvalidRequestError, match="at most 75"):
        tokenize_line("zzqemb", tokenizer, embeddings=FakeLookup(trigger, torch.zeros(CHUNK_LENGTH + 1, 32)))


def test_empty_chunk() -> None:
    chunk = empty_chunk(BOS_ID, EOS_ID)
    assert chunk.tokens == (BOS_ID,) + (EOS_ID,) * 76 and chunk.multipliers == (1.0,) * 77
