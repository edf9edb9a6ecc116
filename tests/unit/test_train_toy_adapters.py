"""The adapter trainer (tools/train_toy_adapters.py) inserts an embedding where the Engine's chunker does."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers.embedding_lookup import FakeLookup

from sdlab.prompt.chunk import tokenize_line
from sdlab.prompt.tokenizer import ClipTokenizer

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def adapters(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """tools/train_toy_adapters.py, imported with tools/ on sys.path for the test."""
    monkeypatch.syspath_prepend(str(TOOLS))
    return importlib.import_module("train_toy_adapters")


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("caption", ["a toypink square on a blue background", "blue background, toypink star",
                                     "toypink circle at the top left, small, on a white background"])
def test_trigger_slots_sit_where_the_engine_puts_the_embedding(adapters: ModuleType, caption: str, count: int) -> None:
    tok = ClipTokenizer.bundled("clip")
    ids, slots = adapters.trigger_rows(tok, [caption], "toypink", count)
    line = tokenize_line(caption, tok, embeddings=FakeLookup(tok.encode("toypink"), torch.zeros(count, 64)))
    (chunk,) = line.chunks
    (slot,) = chunk.embeddings
    assert slots[0].nonzero().flatten().tolist() == list(range(slot.offset, slot.offset + count))
    assert slots[0, slot.offset : slot.offset + count].tolist() == list(range(1, count + 1))
    kept = slots[0] == 0
    assert ids[0][kept].tolist() == [t for t, s in zip(chunk.tokens, slots[0].tolist(), strict=True) if s == 0]


def test_a_caption_without_the_trigger_is_refused(adapters: ModuleType) -> None:
    with pytest.raises(ValueError, match="does not contain the trigger"):
        adapters.trigger_rows(ClipTokenizer.bundled("clip"), ["a red square"], "toypink", 2)
