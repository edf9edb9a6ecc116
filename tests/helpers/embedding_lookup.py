"""A stand-in for :class:`sdlab.prompt.chunk.EmbeddingLookup`: one trigger, one embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sdlab.prompt.chunk import EmbeddingMatch


class FakeLookup:
    """Finds ``trigger`` (a token id sequence) and answers ``vectors`` ([n, width]) as embedding ``name``."""

    def __init__(self, trigger: Sequence[int], vectors: torch.Tensor, name: str = "fake") -> None:
        self.trigger = list(trigger)
        self.match = EmbeddingMatch(name, {int(vectors.shape[1]): vectors}, len(self.trigger))

    def find(self, token_ids: Sequence[int], position: int) -> EmbeddingMatch | None:
        return self.match if list(token_ids[position : position + len(self.trigger)]) == self.trigger else None
