"""ClipTokenizer: A1111 slow-tokenizer normalisation and the open_clip variant."""

from __future__ import annotations

import pytest

from sdlab.errors import InvalidRequestError
from sdlab.prompt.tokenizer import BOS_ID, EOS_ID, ClipTokenizer


@pytest.fixture(scope="module")
def clip() -> ClipTokenizer:
    return ClipTokenizer.bundled("clip")


@pytest.fixture(scope="module")
def open_clip() -> ClipTokenizer:
    return ClipTokenizer.bundled("open_clip")


def test_known_ids(clip: ClipTokenizer) -> None:
    assert clip.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert clip.comma_id == 267


def test_ftfy_normalisation(clip: ClipTokenizer) -> None:
    assert clip.encode("Ｈｅｌｌｏ “quoted” &amp; ﬁne") == [3306, 257, 27706, 257, 261, 3797]
    assert clip.encode("ＡＢＣ  abc") == clip.encode("abc abc")


def test_special_tokens_clip(clip: ClipTokenizer) -> None:
    assert clip.encode("a<|endoftext|>b") == [*clip.encode("a"), EOS_ID, *clip.encode("b")]
    assert clip.encode("(<|startoftext|>") == [263, BOS_ID]
    assert clip.encode("<end_of_text>") != [EOS_ID]


def test_open_clip_variant(open_clip: ClipTokenizer, clip: ClipTokenizer) -> None:
    assert open_clip.encode("a photo of a cat") == clip.encode("a photo of a cat")
    assert open_clip.encode("<end_of_text>") == [EOS_ID]
    assert open_clip.encode("<|endoftext|>") != [EOS_ID]
    # open_clip unescapes HTML twice
    assert open_clip.encode("&amp;lt;") == clip.encode("<")


def test_unknown_variant() -> None:
    with pytest.raises(InvalidRequestError, match="clip"):
        ClipTokenizer.bundled("bert")
