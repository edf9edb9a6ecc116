"""A1111's cond/uncond length reconciliation (``sd_samplers_cfg_denoiser.py``) for tensors [B, 77k, D].

* ``off`` (default): nothing changes; the sampler runs cond and uncond rows in separate UNet calls.
* ``pad`` ("Pad prompt/negative prompt", ``pad_cond_uncond``): the shorter tensor gets
  ``(L_long - L_short) // 77`` copies of the empty-prompt conditioning appended; infotext ``Pad conds: True``.
* ``v0`` (``pad_cond_uncond_v0``, takes precedence in A1111): only uncond changes - a shorter uncond is
  extended by repeating its last row, a longer one is truncated; infotext ``Pad conds v0: True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry


@dataclass(frozen=True)
class PaddedConds:
    """``cond``/``uncond`` after reconciliation and the infotext entry A1111 writes (if any)."""

    cond: torch.Tensor
    uncond: torch.Tensor
    infotext: tuple[tuple[str, str], ...] = ()


def _append_empty(tensor: torch.Tensor, repeats: int, empty: torch.Tensor) -> torch.Tensor:
    return torch.cat([tensor, empty.repeat((tensor.shape[0], repeats, 1))], dim=1)


def _off(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor | None) -> PaddedConds:
    return PaddedConds(cond, uncond)


def _pad(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor | None) -> PaddedConds:
    if empty is None or empty.ndim != 3 or empty.shape[0] != 1:
        raise InvalidRequestError("pad mode needs the empty-prompt conditioning as a [1, 77, D] tensor")
    repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
    if repeats < 0:
        return PaddedConds(_append_empty(cond, -repeats, empty), uncond, (("Pad conds", "True"),))
    if repeats > 0:
        return PaddedConds(cond, _append_empty(uncond, repeats, empty), (("Pad conds", "True"),))
    return PaddedConds(cond, uncond)


def _v0(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor | None) -> PaddedConds:
    short = cond.shape[1] - uncond.shape[1]
    if short > 0:
        uncond = torch.hstack([uncond, uncond[:, -1:].repeat([1, short, 1])])
    elif short < 0:
        uncond = uncond[:, : cond.shape[1]]
    return PaddedConds(cond, uncond, (("Pad conds v0", "True"),))


PAD_MODES: Registry[Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], PaddedConds]] = Registry.of(
    "cond/uncond padding mode", [("off", _off), ("pad", _pad), ("v0", _v0)]
)


def pad_cond_uncond(
    cond: torch.Tensor, uncond: torch.Tensor, mode: str = "off", empty: torch.Tensor | None = None
) -> PaddedConds:
    """Reconcile token lengths of ``cond`` and ``uncond`` ([B, L, D]) per ``mode`` (off | pad | v0).

    Equal lengths are returned unchanged in every mode; ``empty`` is needed for ``pad``.
    """
    handler = PAD_MODES.get(mode)
    if cond.shape[1] == uncond.shape[1]:
        return PaddedConds(cond, uncond)
    return handler(cond, uncond, empty)
