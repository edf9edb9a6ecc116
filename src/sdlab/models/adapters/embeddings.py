"""Textual-inversion embeddings (A1111 semantics) and the prompt package's embedding lookup.

Formats (A1111 ``create_embedding_from_data``): ``.pt``/``.bin`` with ``string_to_param`` (one term),
a single-tensor dict (diffusers concepts ``{"<tok>": [w]}``, ``.safetensors`` ``emb_params``), and SDXL
``clip_l`` + ``clip_g``. Pickles are read only with ``weights_only=True`` (a payload that needs code is
refused). The trigger word is the file name without extension; it matches where its token ids occur
in the prompt's token stream (A1111 matches token-id sequences, longest first).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import torch

from sdlab.errors import AdapterLoadError, SdlabError
from sdlab.models.files import load_pickle_state_dict, open_state_dict
from sdlab.prompt.chunk import EmbeddingMatch

LOG = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
#: SDXL embedding parts -> text encoder they belong to (CLIP-L 768 wide, OpenCLIP-G 1280 wide).
SDXL_PARTS = ("clip_l", "clip_g")
#: text-encoder widths -> family of an embedding holding exactly those widths.
WIDTHS_FAMILY: Mapping[tuple[int, ...], str] = MappingProxyType({(768,): "sd1", (1024,): "sd2", (768, 1280): "sdxl"})


@dataclass(frozen=True, eq=False)
class Embedding:
    """One embedding: ``name`` (trigger = file stem), ``vectors`` (encoder width -> [n, width] float32)."""

    name: str
    path: Path
    vectors: Mapping[int, torch.Tensor]

    @property
    def vector_count(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(sorted(self.vectors))

    @property
    def family(self) -> str | None:
        """``sd1`` / ``sd2`` / ``sdxl`` from the vector widths, or None."""
        return WIDTHS_FAMILY.get(self.widths)


def _as_matrix(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        raise AdapterLoadError(f"embedding {name!r}: expected a floating-point tensor, found {type(t).__name__}")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[0] < 1:
        raise AdapterLoadError(f"embedding {name!r}: vectors must be [n, width], found shape {list(t.shape)}")
    return t.detach().to(torch.float32).contiguous()


def vectors_from_state(name: str, state: Mapping[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Width -> vectors from a flat ``{key: tensor}`` dict (pickles are flattened with dotted keys)."""
    keys = list(state)
    params = [k for k in keys if k.startswith("string_to_param.")]
    if params:
        if len(params) != 1:
            raise AdapterLoadError(f"embedding {name!r} has {len(params)} terms in string_to_param; expected one")
        return _by_width(name, [_as_matrix(name, state[params[0]])])
    if all(part in state for part in SDXL_PARTS):
        mats = [_as_matrix(name, state[part]) for part in SDXL_PARTS]
        if mats[0].shape[0] != mats[1].shape[0]:
            raise AdapterLoadError(f"embedding {name!r}: clip_l and clip_g hold different vector counts")
        return _by_width(name, mats)
    if len(keys) != 1:
        raise AdapterLoadError(
            f"embedding {name!r} has {len(keys)} tensors ({', '.join(keys[:5])}); expected string_to_param, "
            "clip_l + clip_g, or a single tensor"
        )
    return _by_width(name, [_as_matrix(name, state[keys[0]])])


def _by_width(name: str, mats: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    out = {int(m.shape[1]): m for m in mats}
    if len(out) != len(mats):
        raise AdapterLoadError(f"embedding {name!r} has two parts of the same width {mats[0].shape[1]}")
    return out


def load_embedding(path: str | os.PathLike[str]) -> Embedding:
    """Load one embedding file; AdapterLoadError naming the file and the defect."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise AdapterLoadError(f"{p}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")
    try:
        state = open_state_dict(p) if suffix == ".safetensors" else load_pickle_state_dict(p)
        vectors = vectors_from_state(p.stem, {k: state[k] for k in state})
    except AdapterLoadError:
        raise
    except SdlabError as exc:
        raise AdapterLoadError(f"cannot load embedding {p}: {exc}") from None
    return Embedding(p.stem, p, MappingProxyType(vectors))


def embedding_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Embedding files under ``folder`` (recursive, sorted; hidden files skipped)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in EMBEDDING_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip


class TokenIds(Protocol):
    """What the lookup needs of a tokenizer: token ids of texts, without BOS/EOS."""

    def encode_many(self, texts: list[str]) -> list[list[int]]: ...


@dataclass(frozen=True, eq=False)
class EmbeddingLookup:
    """Implements :class:`sdlab.prompt.chunk.EmbeddingLookup` over a set of embeddings.

    ``widths``: the model's text-encoder widths (SD1 (768,), SD2 (1024,), SDXL (768, 1280)); an
    embedding found in a prompt whose widths differ raises AdapterLoadError naming both."""

    embeddings: Mapping[str, Embedding]
    by_first_id: Mapping[int, tuple[tuple[tuple[int, ...], str], ...]]
    widths: tuple[int, ...]
    broken: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, embeddings: Iterable[Embedding], tokenizer: TokenIds, widths: Sequence[int],
              broken: Mapping[str, str] | None = None) -> EmbeddingLookup:  # fmt: skip
        """Index ``embeddings`` by the token ids of their names (a later duplicate name is ignored).
        ``broken``: name -> error of files that failed to load; using such a trigger raises that error."""
        table: dict[str, Embedding] = {}
        for emb in embeddings:
            if emb.name in table:
                LOG.warning("embedding %r in %s ignored: %s has the same name", emb.name, emb.path, table[emb.name].path)
                continue
            table[emb.name] = emb
        bad = {k: v for k, v in (broken or {}).items() if k not in table}
        names = list(table) + list(bad)
        index: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        for name, ids in zip(names, tokenizer.encode_many(names)):
            if ids:
                index.setdefault(ids[0], []).append((tuple(ids), name))
        frozen = {k: tuple(sorted(v, key=lambda e: -len(e[0]))) for k, v in index.items()}
        return cls(MappingProxyType(table), MappingProxyType(frozen), tuple(sorted(widths)), MappingProxyType(bad))

    def find(self, token_ids: Sequence[int], position: int) -> EmbeddingMatch | None:
        for ids, name in self.by_first_id.get(token_ids[position], ()):
            if tuple(token_ids[position : position + len(ids)]) == ids:
                if name in self.broken:
                    raise AdapterLoadError(f"embedding {name!r} is used in the prompt but failed to load: {self.broken[name]}")
                emb = self.embeddings[name]
                self.check_width(emb)
                return EmbeddingMatch(name, emb.vectors, len(ids))
        return None

    def check_width(self, emb: Embedding) -> None:
        """AdapterLoadError unless ``emb`` has vectors for exactly the model's encoder widths."""
        if emb.widths != self.widths:
            raise AdapterLoadError(
                f"embedding {emb.name!r} ({emb.path.name}) has vectors {'/'.join(map(str, emb.widths))} wide but the "
                f"model's text encoder{'s are' if len(self.widths) > 1 else ' is'} {'/'.join(map(str, self.widths))} "
                f"wide: it was made for {(emb.family or 'another model').upper()}; remove it from the prompt"
            )


def load_embeddings(folder: str | os.PathLike[str]) -> tuple[tuple[Embedding, ...], dict[str, str]]:
    """Every loadable embedding under ``folder``, and ``{name: error}`` for files that failed (logged;
    pass them to :meth:`EmbeddingLookup.build` so that using one in a prompt raises its error)."""
    out, broken = [], {}
    for path in embedding_files(folder):
        try:
            out.append(load_embedding(path))
        except AdapterLoadError as exc:
            LOG.warning("skipping embedding %s: %s", path, exc)
            broken.setdefault(path.stem, str(exc))
    return tuple(out), broken


def lookup_for_folder(folder: str | os.PathLike[str], tokenizer: TokenIds, widths: Sequence[int]) -> EmbeddingLookup:
    """An :class:`EmbeddingLookup` over every embedding file under ``folder`` (A1111's embeddings dir)."""
    embeddings, broken = load_embeddings(folder)
    return EmbeddingLookup.build(embeddings, tokenizer, widths, broken)


def model_widths(text_encoders: Iterable[torch.nn.Module]) -> tuple[int, ...]:
    """Hidden widths of a model's text encoders (``config.hidden_size``)."""
    return tuple(int(te.config.hidden_size) for te in text_encoders)
