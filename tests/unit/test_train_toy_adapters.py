"""The adapter trainer (tools/train_toy_adapters.py) inserts an embedding where the Engine's chunker does."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
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
@pytest.mark.parametrize("caption", ["a toyorchid square on a blue background", "blue background, toyorchid star",
                                     "toyorchid circle at the top left, small, on a white background"])
def test_trigger_slots_sit_where_the_engine_puts_the_embedding(adapters: ModuleType, caption: str, count: int) -> None:
    tok = ClipTokenizer.bundled("clip")
    ids, slots = adapters.trigger_rows(tok, [caption], "toyorchid", count)
    line = tokenize_line(caption, tok, embeddings=FakeLookup(tok.encode("toyorchid"), torch.zeros(count, 64)))
    (chunk,) = line.chunks
    (slot,) = chunk.embeddings
    assert slots[0].nonzero().flatten().tolist() == list(range(slot.offset, slot.offset + count))
    assert slots[0, slot.offset : slot.offset + count].tolist() == list(range(1, count + 1))
    kept = slots[0] == 0
    assert ids[0][kept].tolist() == [t for t, s in zip(chunk.tokens, slots[0].tolist(), strict=True) if s == 0]


def test_a_caption_without_the_trigger_is_refused(adapters: ModuleType) -> None:
    with pytest.raises(ValueError, match="does not contain the trigger"):
        adapters.trigger_rows(ClipTokenizer.bundled("clip"), ["a red square"], "toyorchid", 2)


@pytest.mark.parametrize("index", [0, 1, 7, 42])
def test_a_samples_mask_covers_exactly_its_shape(adapters: ModuleType, index: int) -> None:
    """The mask that weights the loss (``--shape-weight``) is where the adapter's colour was drawn."""
    pixels, _, mask = adapters.sample(index, adapters.TEAL, None)
    assert mask.shape == pixels.shape[:2] and mask.dtype == bool
    assert 20 <= mask.sum() < mask.size
    np.testing.assert_array_equal(mask, (pixels == np.asarray(adapters.TEAL)).all(axis=2))


def test_x0_weight_is_the_inverse_snr_capped(adapters: ModuleType) -> None:
    """``--loss x0`` weights a timestep's squared epsilon error by (1 - a) / a = 1 / SNR: the clean-latent
    error, since x0 - x0_pred = sqrt((1 - a) / a) * (eps_pred - eps). Capped so t near 1000 (1/SNR ~ 200)
    does not swamp the batch; "eps" leaves every row at 1."""
    a = torch.tensor([0.9, 0.5, 0.1, 0.01])
    expected = torch.tensor([1 / 9, 1.0, 9.0, 20.0])
    torch.testing.assert_close(adapters.x0_weight(a), expected)
    torch.testing.assert_close(adapters.x0_weight(a, cap=5.0), expected.clamp(max=5.0))
    eps, eps_pred, x0 = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    noisy = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * eps
    predicted = (noisy - (1 - a).sqrt()[:, None] * eps_pred) / a.sqrt()[:, None]
    uncapped = adapters.x0_weight(a, cap=float("inf"))
    torch.testing.assert_close(((predicted - x0) ** 2).sum(1), uncapped * ((eps_pred - eps) ** 2).sum(1))
    assert torch.equal(adapters.LOSS_WEIGHTS["eps"](a), torch.ones(4))
