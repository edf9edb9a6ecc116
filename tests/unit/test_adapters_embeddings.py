"""Textual-inversion files, the lookup used by the chunker, A1111 hashes and listing."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.catalog import list_embeddings, list_loras
from sdlab.models.adapters.embeddings import EmbeddingLookup, load_embedding, lookup_for_folder
from sdlab.models.adapters.hashes import addnet_hash, find_from_infotext, hashes_value, lora_hash, parse_hashes_value
from sdlab.prompt.chunk import tokenize_line
from sdlab.prompt.tokenizer import ClipTokenizer


class _Payload:
    def __reduce__(self):  # a pickle that would run code when loaded
        return (print, ("pwned",))


def test_a1111_pt_and_safetensors_formats(tmp_path: Path) -> None:
    vec = torch.randn(3, 768)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "x", "step": 500}, tmp_path / "style.pt")
    emb = load_embedding(tmp_path / "style.pt")
    assert emb.name == "style" and emb.widths == (768,) and torch.equal(emb.vectors[768], vec)
    save_file({"emb_params": vec[:1].contiguous()}, str(tmp_path / "one.safetensors"))
    assert load_embedding(tmp_path / "one.safetensors").vector_count == 1
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "xl.safetensors"))
    xl = load_embedding(tmp_path / "xl.safetensors")
    assert xl.widths == (768, 1280) and xl.family == "sdxl"


def test_pickle_payload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"string_to_param": {"*": _Payload()}}))
    with pytest.raises(AdapterLoadError, match="evil"):
        load_embedding(path)


def test_trigger_inserts_vectors_and_width_mismatch_names_both(tmp_path: Path) -> None:
    tok = ClipTokenizer.bundled()
    save_file({"emb_params": torch.randn(4, 768)}, str(tmp_path / "badhand.safetensors"))
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "xlstyle.safetensors"))
    lookup = lookup_for_folder(tmp_path, tok, (768,))
    line = tokenize_line("a photo, BadHand", tok, embeddings=lookup)
    (slot,) = line.chunks[0].embeddings
    assert slot.match.name == "badhand" and slot.match.vector_count == 4
    with pytest.raises(AdapterLoadError, match=r"'xlstyle'.*768/1280.*768"):
        tokenize_line("xlstyle", tok, embeddings=lookup)


def test_longest_trigger_wins() -> None:
    class Tok:
        def encode_many(self, texts: list[str]) -> list[list[int]]:
            return [[ord(c) for c in t] for t in texts]

    from sdlab.models.adapters.embeddings import Embedding

    embs = [Embedding(n, Path(n), {8: torch.zeros(1, 8)}) for n in ("ab", "abc")]
    lookup = EmbeddingLookup.build(embs, Tok(), (8,))
    match = lookup.find([ord(c) for c in "xabcd"], 1)
    assert match is not None and match.name == "abc" and match.trigger_length == 3


def test_addnet_hash_skips_the_header(tmp_path: Path) -> None:
    path = tmp_path / "net.safetensors"
    save_file({"lora_unet_conv_in.lora_down.weight": torch.ones(2, 4)}, str(path), metadata={"a": "b"})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert addnet_hash(path) == hashlib.sha256(raw[8 + n :]).hexdigest() != hashlib.sha256(raw).hexdigest()
    assert lora_hash(path) == addnet_hash(path)


def test_hashes_value_as_a1111_writes_it() -> None:
    value = hashes_value([("add:detail", "7c6bad76eb54ffff"), ("x,y", "0123456789abcdef"), ("add:detail", "aaaaaaaaaaaaaaaa")])
    assert value == "adddetail: aaaaaaaaaaaa, xy: 0123456789ab"
    assert parse_hashes_value(value) == {"adddetail": "aaaaaaaaaaaa", "xy": "0123456789ab"}


def test_listing_and_finding_by_hash(tmp_path: Path) -> None:
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    path = lora_dir / "renamed.safetensors"
    save_file({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.ones(4, 768),
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.ones(768, 4)}, str(path))  # fmt: skip
    (info,) = list_loras(tmp_path)
    assert (info.types, info.family, info.rank, info.hash) == (("lora",), "sd1", 4, lora_hash(path)[:12])
    assert find_from_infotext(lora_dir, "old_name", info.hash) == path
    (tmp_path / "embeddings").mkdir()
    save_file({"emb_params": torch.ones(2, 1024)}, str(tmp_path / "embeddings" / "neg.safetensors"))
    (e,) = list_embeddings(tmp_path)
    assert (e.name, e.vectors, e.family) == ("neg", 2, "sd2")
