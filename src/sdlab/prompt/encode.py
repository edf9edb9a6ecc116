"""Prompt texts -> conditioning tensors, as A1111's ``FrozenCLIPEmbedderWithCustomWords.forward(texts)``.

For each text encoder of the family (:mod:`.encode_family`): every text is chunked (:mod:`.chunk`); texts
with fewer chunks are padded with the empty chunk (BOS + 76 EOS); chunk index i of all texts is encoded as
one batch - one encoder pass per chunk index, so a 150-token prompt costs 2 passes. Per chunk batch: ids
after the first EOS of each row become the encoder's ``pad_id`` (0 for OpenCLIP); no attention mask (causal
only); textual-inversion vectors overwrite their slots in the token embeddings (a forward hook removed
right after the pass); the chosen hidden state (+ final LayerNorm) gives z [B, 77, D]; the emphasis mode
applies the multipliers to the whole chunk batch (:mod:`.encode_emphasis`). Chunks are concatenated on the
token axis ([B, 77k, D]); encoders are concatenated on channels. Identical texts in one call are encoded
once but the emphasis still sees the full batch, so results equal A1111's. ``pooled`` is the projected
pooled output of chunk 0 of the encoder that has one (SDXL's OpenCLIP-bigG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from sdlab.errors import InvalidRequestError
from sdlab.prompt.chunk import (
    DEFAULT_COMMA_BACKTRACK,
    EmbeddingLookup,
    PromptChunk,
    TokenizedLine,
    empty_chunk,
    tokenize_line,
)
from sdlab.prompt.encode_emphasis import DEFAULT_EMPHASIS, EMPHASIS_MODES, emphasis_infotext
from sdlab.prompt.encode_family import FAMILIES, EncoderSpec, FamilySpec, LayerChoice, choose_layer
from sdlab.prompt.tokenizer import ClipTokenizer


@dataclass(frozen=True)
class EncodeOptions:
    """A1111 options that shape conditioning.

    ``emphasis``: Original | No norm | Ignore | None; ``clip_skip``: 1..layers+1 (1 = last layer);
    ``comma_padding_backtrack``: 0..74; ``sdxl_clip_l_skip``: A1111's "Clip skip for SDXL CLIP-L";
    ``embeddings``: textual-inversion lookup or None.
    """

    emphasis: str = DEFAULT_EMPHASIS
    clip_skip: int = 1
    comma_padding_backtrack: int = DEFAULT_COMMA_BACKTRACK
    sdxl_clip_l_skip: bool = False
    embeddings: EmbeddingLookup | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Conditioning:
    """``cond`` [B, 77k, D] and ``pooled`` [B, P] (or None) for B texts, A1111's token counts per text,
    and infotext entries A1111 adds (``Emphasis``, ``TI``)."""

    cond: torch.Tensor
    pooled: torch.Tensor | None
    token_counts: tuple[int, ...]
    extra_generation_params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def _final_norm(model: torch.nn.Module) -> torch.nn.Module:
    norm = getattr(model, "final_layer_norm", None) or getattr(getattr(model, "text_model", None), "final_layer_norm", None)
    if norm is None:
        raise InvalidRequestError(f"{type(model).__name__} has no final_layer_norm: not a CLIP text model")
    return norm


def _num_layers(model: torch.nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def _first_param(model: torch.nn.Module) -> torch.Tensor:
    return next(model.parameters())


def _chunk_ids(chunks: Sequence[PromptChunk], pad_id: int, eos_id: int, device: torch.device) -> torch.Tensor:
    rows = []
    for chunk in chunks:
        tokens = list(chunk.tokens)
        if pad_id != eos_id:
            first_eos = tokens.index(eos_id)
            tokens[first_eos + 1 :] = [pad_id] * (len(tokens) - first_eos - 1)
        rows.append(tokens)
    return torch.tensor(rows, dtype=torch.long, device=device)


def _slot_hook(chunks: Sequence[PromptChunk], width: int):
    """Forward hook for the token-embedding module writing each chunk's embedding vectors into its slots."""

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, chunk in enumerate(chunks):
            for slot in chunk.embeddings:
                vectors = slot.match.for_width(width).to(device=output.device, dtype=output.dtype)
                count = min(output.shape[1] - slot.offset, vectors.shape[0])
                output[row, slot.offset : slot.offset + count] = vectors[:count]
        return output

    return hook


def _run_encoder(
    model: torch.nn.Module, ids: torch.Tensor, chunks: Sequence[PromptChunk], layer: LayerChoice, pooled: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder pass over a chunk batch: (z [U, 77, D], pooled [U, P] or None)."""
    handle = None
    if any(chunk.embeddings for chunk in chunks):
        handle = model.get_input_embeddings().register_forward_hook(_slot_hook(chunks, int(model.config.hidden_size)))
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        if handle is not None:
            handle.remove()
    if layer.from_end == 1 and layer.final_norm:
        z = out.last_hidden_state
    else:
        z = out.hidden_states[-layer.from_end]
        z = _final_norm(model)(z) if layer.final_norm else z
    if not pooled:
        return z, None
    eos_state = out.last_hidden_state[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]
    return z, model.text_projection(eos_state)


class TextConditioner:
    """Encodes prompt texts for one model family (see :mod:`.encode_family`) the way A1111 does.

    ``tokenizers`` and ``text_encoders`` are in the family's encoder order (transformers ``CLIPTextModel``;
    ``CLIPTextModelWithProjection`` where the spec wants pooled output). Holds no per-call state.
    """

    def __init__(
        self,
        family: FamilySpec | str,
        tokenizers: Sequence[ClipTokenizer],
        text_encoders: Sequence[torch.nn.Module],
    ) -> None:
        self.family = FAMILIES.get(family) if isinstance(family, str) else family
        if not len(tokenizers) == len(text_encoders) == len(self.family.encoders):
            raise InvalidRequestError(
                f"family {self.family.name!r} needs {len(self.family.encoders)} tokenizer(s) and text encoder(s); "
                f"got {len(tokenizers)} and {len(text_encoders)}"
            )
        for spec, model in zip(self.family.encoders, text_encoders):
            _check_encoder(spec, model)
        self.tokenizers = tuple(tokenizers)
        self.text_encoders = tuple(text_encoders)

    def tokenize(self, texts: Sequence[str], options: EncodeOptions = EncodeOptions()) -> list[list[TokenizedLine]]:
        """Chunks per encoder, per text (A1111's ``tokenize_line``)."""
        return [
            [
                tokenize_line(
                    text,
                    tokenizer,
                    emphasis=options.emphasis,
                    comma_padding_backtrack=options.comma_padding_backtrack,
                    embeddings=options.embeddings,
                )
                for text in texts
            ]
            for tokenizer in self.tokenizers
        ]

    def encode(self, texts: Sequence[str], options: EncodeOptions = EncodeOptions(), *, negative: bool = False) -> Conditioning:
        """Conditioning of ``texts`` (already schedule-resolved, A1111 attention syntax) as one A1111 batch.

        ``negative``: these are negative prompts (SDXL encodes an all-empty negative batch as zeros).
        """
        texts = _check_texts(texts)
        EMPHASIS_MODES.get(options.emphasis)
        unique = list(dict.fromkeys(texts))
        rows = torch.tensor([unique.index(text) for text in texts], dtype=torch.long)
        per_encoder = self.tokenize(unique, options)
        _check_chunk_counts(per_encoder)
        conds, pooled, used = [], None, {}
        with torch.no_grad():
            for spec, tokenizer, model, lines in zip(self.family.encoders, self.tokenizers, self.text_encoders, per_encoder):
                cond, pool = self._encode_one(spec, tokenizer, model, lines, rows, options)
                conds.append(cond)
                pooled = pool if pool is not None else pooled
                used.update(_used_embeddings(lines))
            cond = torch.cat(conds, dim=-1) if len(conds) > 1 else conds[0]
            if negative and self.family.zero_empty_negative and all(text == "" for text in texts):
                cond = torch.zeros_like(cond)
                pooled = None if pooled is None else torch.zeros_like(pooled)
        counts = tuple(per_encoder[0][unique.index(text)].token_count for text in texts)
        return Conditioning(cond, pooled, counts, MappingProxyType(_infotext(options.emphasis, texts, used)))

    def empty_prompt(self, options: EncodeOptions = EncodeOptions()) -> torch.Tensor:
        """Conditioning of ``""`` [1, 77, D] (A1111's ``cond_stage_model_empty_prompt``, for cond/uncond padding)."""
        return self.encode([""], options).cond

    def _encode_one(
        self,
        spec: EncoderSpec,
        tokenizer: ClipTokenizer,
        model: torch.nn.Module,
        lines: list[TokenizedLine],
        rows: torch.Tensor,
        options: EncodeOptions,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        layer = choose_layer(spec, options.clip_skip, options.sdxl_clip_l_skip, _num_layers(model))
        apply = EMPHASIS_MODES.get(options.emphasis).apply
        device, dtype = _first_param(model).device, _first_param(model).dtype
        rows = rows.to(device)
        filler = empty_chunk(tokenizer.bos_id, tokenizer.eos_id)
        zs, pooled = [], None
        for index in range(max(len(line.chunks) for line in lines)):
            chunks = [line.chunks[index] if index < len(line.chunks) else filler for line in lines]
            ids = _chunk_ids(chunks, spec.pad_id, tokenizer.eos_id, device)
            z, pool = _run_encoder(model, ids, chunks, layer, spec.pooled and index == 0)
            multipliers = torch.tensor([chunks[r].multipliers for r in rows.tolist()], dtype=torch.float32, device=device)
            zs.append(apply(z[rows], multipliers).to(dtype))
            pooled = pool[rows] if pool is not None else pooled
        return torch.hstack(zs), pooled


def _check_encoder(spec: EncoderSpec, model: torch.nn.Module) -> None:
    width = int(model.config.hidden_size)
    if spec.width is not None and spec.width != width:
        raise InvalidRequestError(f"text encoder has hidden size {width}, the family expects {spec.width}")
    if spec.pooled and getattr(model, "text_projection", None) is None:
        raise InvalidRequestError(f"{type(model).__name__} has no text_projection; use CLIPTextModelWithProjection")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequestError("texts must be a non-empty list of prompt strings")
    return list(texts)


def _check_chunk_counts(per_encoder: list[list[TokenizedLine]]) -> None:
    for lines in per_encoder[1:]:
        for first, other in zip(per_encoder[0], lines):
            if len(first.chunks) != len(other.chunks):
                raise InvalidRequestError(
                    "the prompt splits into a different number of 75-token chunks for the two text encoders "
                    "(their tokenizers differ on HTML entities or special tokens); simplify that text"
                )


def _used_embeddings(lines: list[TokenizedLine]) -> dict[str, None]:
    return {slot.match.name: None for line in lines for chunk in line.chunks for slot in chunk.embeddings}


def _infotext(emphasis: str, texts: list[str], used: dict[str, None]) -> dict[str, str]:
    params: dict[str, str] = {}
    if used:
        params["TI"] = ", ".join(name.replace(":", "").replace(",", "") for name in used)
    params.update(emphasis_infotext(emphasis, texts))
    return params
