"""A1111 emphasis modes (``modules/sd_emphasis.py``): how per-token multipliers change the conditioning.

Each mode says whether the prompt is attention-parsed at all and how the multipliers ``m`` [B, 77]
are applied to one encoded chunk batch ``z`` [B, 77, D]:

* ``Original`` (default): ``mean0 = z.mean()`` over the whole chunk batch, ``z = z * m[..., None]``,
  ``z = z * (mean0 / z.mean())``. All-one multipliers return z unscaled: A1111's factor is then exactly
  1.0, except where z's mean is exactly 0.0 and it computes 0/0 (NaN; the toy default model's encoder,
  whose hidden states average ~1e-4, gives that for about one plain prompt in 7,000). Where a weighted
  mean is exactly 0, A1111 divides by zero (NaN/inf conditioning, a broken image); sdlab raises
  InvalidRequestError suggesting "No norm" instead. Every other result is identical to A1111.
* ``No norm``: ``z * m[..., None]``.
* ``Ignore``: brackets are parsed (and stripped) but z is unchanged.
* ``None``: no attention parsing at all (brackets and BREAK are literal text); z unchanged.

Multipliers are float32 as in A1111 (``torch.asarray`` of Python floats), so an fp16 z is promoted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry


def _original(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    if bool((multipliers == 1).all()):
        return z.to(torch.promote_types(z.dtype, multipliers.dtype))  # the dtype z * multipliers would have
    original_mean = z.mean()
    z = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    new_mean = z.mean()
    if bool(new_mean == 0):
        raise InvalidRequestError(
            "emphasis 'Original' cannot restore the mean: the weighted conditioning has mean 0 "
            "(A1111 would produce NaN here); use emphasis 'No norm' or change the weights"
        )
    return z * (original_mean / new_mean)


def _no_norm(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    return z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)


def _unchanged(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    return z


@dataclass(frozen=True)
class EmphasisMode:
    """``parse``: run the attention parser; ``apply(z [B,77,D], m [B,77] float32) -> z``."""

    name: str
    parse: bool
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


EMPHASIS_MODES: Registry[EmphasisMode] = Registry.of(
    "emphasis mode",
    [
        ("Original", EmphasisMode("Original", True, _original)),
        ("No norm", EmphasisMode("No norm", True, _no_norm)),
        ("Ignore", EmphasisMode("Ignore", True, _unchanged)),
        ("None", EmphasisMode("None", False, _unchanged)),
    ],
)

DEFAULT_EMPHASIS = "Original"


def emphasis_infotext(mode: str, texts: list[str]) -> dict[str, str]:
    """A1111's ``Emphasis`` infotext entry: ``{"Emphasis": name}`` when the mode is not Original and a
    text contains ``(`` or ``[``; else ``{}``."""
    name = EMPHASIS_MODES.canonical(mode)
    if name != DEFAULT_EMPHASIS and any("(" in t or "[" in t for t in texts):
        return {"Emphasis": name}
    return {}
