"""Prompt plan -> conditioning the CFG denoiser consumes, step by step (A1111's scheduled conditioning).

Texts are encoded in the batches A1111 encodes them (each AND part's schedule texts together, then the
negative schedule), once per distinct text. ``cond_at(step)`` / ``uncond_at(step)`` return, for denoiser
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


def encode_plan(
    plan: PromptPlan, conditioner: TextConditioner, options: EncodeOptions, cache: dict[tuple[str, bool], EncodedText]
) -> dict[tuple[str, bool], EncodedText]:
    """Encode every text of ``plan`` in A1111's batches; ``cache`` (text, negative) -> result is filled in place."""
    batches = plan.encode_batches
    for index, batch in enumerate(batches):
        negative = index == len(batches) - 1
        missing = [t for t in dict.fromkeys(batch) if (t, negative) not in cache]
        if not missing:
            continue
        out = conditioner.encode(list(batch), options, negative=negative)
        for row, text in enumerate(batch):
            pooled = None if out.pooled is None else out.pooled[row]
            cache.setdefault((text, negative), EncodedText(out.cond[row], pooled))
    return cache


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
    encoded: Mapping[tuple[str, bool], EncodedText]
    batch_size: int
    extra_cond: Mapping[str, Tensor]
    extra_uncond: Mapping[str, Tensor]

    def cond_at(self, step: int) -> MultiCond:
        """AND parts of every image at denoiser call ``step`` (rows image-major, A1111's order)."""
        parts = self.plan.cond_at(step)
        texts = [self.encoded[(p.text, False)] for _ in range(self.batch_size) for p in parts]
        conds_list, row = [], 0
        for _ in range(self.batch_size):
            conds_list.append(tuple((row + k, p.weight) for k, p in enumerate(parts)))
            row += len(parts)
        return MultiCond(tuple(conds_list), _rows(texts, self.extra_cond))

    def uncond_at(self, step: int) -> Rows:
        """Negative conditioning of every image at denoiser call ``step``."""
        text = self.encoded[(self.plan.uncond_at(step), True)]
        return _rows([text] * self.batch_size, self.extra_uncond)
