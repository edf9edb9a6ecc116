"""Prompt plan -> conditioning the CFG denoiser consumes, step by step (A1111's scheduled conditioning).

Texts are encoded in the batches A1111 encodes them (each AND part's schedule texts together, then the
negative schedule), each batch once. ``cond_at(step)`` / ``uncond_at(step)`` return, for denoiser
call ``step``, the rows of every image as a dict of tensors that the UNet callable understands:
``context`` [N, 77k, D] and, for SDXL, ``text_embeds`` [N, P] and ``time_ids`` [N, 6 or 5].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.plan import PromptPlan
from sdlab.samplers.types import MultiCond

Rows = dict[str, Tensor]


@dataclass(frozen=True)
class EncodedText:
    """One text's conditioning: ``context`` [77k, D] and ``pooled`` [P] (SDXL) or None."""

    context: Tensor
    pooled: Tensor | None


@dataclass(frozen=True)
class EncodedPlan:
    """Encoded texts of a prompt plan: per AND part (its schedule texts) and for the negative schedule."""

    parts: tuple[Mapping[str, EncodedText], ...]
    negative: Mapping[str, EncodedText]


BatchCache = dict[tuple[tuple[str, ...], bool], tuple[EncodedText, ...]]


def _encode_batch(
    texts: tuple[str, ...], negative: bool, conditioner: TextConditioner, options: EncodeOptions, cache: BatchCache
) -> dict[str, EncodedText]:
    key = (texts, negative)
    if key not in cache:
        out = conditioner.encode(list(texts), options, negative=negative)
        pooled = [None] * len(texts) if out.pooled is None else list(out.pooled)
        cache[key] = tuple(EncodedText(out.cond[i], pooled[i]) for i in range(len(texts)))
    return dict(zip(texts, cache[key]))


def encode_plan(
    plan: PromptPlan, conditioner: TextConditioner, options: EncodeOptions, cache: BatchCache
) -> EncodedPlan:
    """Encode ``plan`` as A1111 does: each AND part's schedule texts as one batch (they share the
    "Original" emphasis mean), the negative schedule as another; ``cache`` keeps batches across calls."""
    parts = tuple(
        _encode_batch(tuple(t for _, t in part.schedule), False, conditioner, options, cache) for part in plan.parts
    )
    negative = _encode_batch(tuple(t for _, t in plan.negative), True, conditioner, options, cache)
    return EncodedPlan(parts, negative)


def pad_to_tokens(context: Tensor, tokens: int) -> Tensor:
    """A1111 ``reconstruct_multicond_batch``: repeat the last row until ``context`` has ``tokens`` rows."""
    missing = tokens - context.shape[0]
    return context if missing <= 0 else torch.cat([context, context[-1:].repeat(missing, 1)])


def _rows(texts: list[EncodedText], extra: Mapping[str, Tensor]) -> Rows:
    tokens = max(t.context.shape[0] for t in texts)
    rows: Rows = {"context": torch.stack([pad_to_tokens(t.context, tokens) for t in texts])}
    if texts[0].pooled is not None:
        rows["text_embeds"] = torch.stack([t.pooled for t in texts])  # type: ignore[misc]
    for key, value in extra.items():
        rows[key] = value.expand(len(texts), -1)
    return rows


@dataclass(frozen=True)
class ScheduledConditioning:
    """The conditioning source for one sampling run of ``batch_size`` images sharing ``plan``.

    ``extra_cond`` / ``extra_uncond``: per-row tensors of shape [1, K] added to every row (SDXL time ids).
    """

    plan: PromptPlan
    encoded: EncodedPlan
    batch_size: int
    extra_cond: Mapping[str, Tensor]
    extra_uncond: Mapping[str, Tensor]

    def cond_at(self, step: int) -> MultiCond:
        """AND parts of every image at denoiser call ``step`` (rows image-major, A1111's order)."""
        parts = self.plan.cond_at(step)
        texts = [self.encoded.parts[k][p.text] for _ in range(self.batch_size) for k, p in enumerate(parts)]
        conds_list, row = [], 0
        for _ in range(self.batch_size):
            conds_list.append(tuple((row + k, p.weight) for k, p in enumerate(parts)))
            row += len(parts)
        return MultiCond(tuple(conds_list), _rows(texts, self.extra_cond))

    def uncond_at(self, step: int) -> Rows:
        """Negative conditioning of every image at denoiser call ``step``."""
        text = self.encoded.negative[self.plan.uncond_at(step)]
        return _rows([text] * self.batch_size, self.extra_uncond)
