"""How A1111 reads each text encoder of a model family (layer, final LayerNorm, padding, pooled output).

* ``sd1`` - CLIP ViT-L/14 (width 768): last layer incl. final LayerNorm; CLIP skip n > 1 uses
  ``final_layer_norm(hidden_states[-n])``; padding id = EOS (49407).
* ``sd2`` - OpenCLIP ViT-H/14 loaded as a transformers ``CLIPTextModel`` (width 1024): penultimate layer
  (``hidden_states[-2]``) + final LayerNorm; padding id 0 after the first EOS; A1111 v1.10.1 ignores CLIP skip
  here (``sd_hijack_open_clip.encode_with_transformers`` never reads it); open_clip tokenizer.
* ``sdxl`` - CLIP-L (768): ``hidden_states[-2]`` without final LayerNorm, padding EOS; CLIP skip is ignored
  unless the A1111 option "Clip skip for SDXL CLIP-L" (``sdxl_clip_l_skip``, default off) is on, then
  ``hidden_states[-n]`` without final LayerNorm (so n = 1 is the *un-normalised* last layer).
  OpenCLIP-bigG (1280, ``CLIPTextModelWithProjection``): ``hidden_states[-2]`` without final LayerNorm,
  padding 0, CLIP skip ignored; pooled = ``text_projection(last_hidden_state[argmax(ids)])`` of chunk 0.
  Outputs are concatenated on channels (2048). An all-empty negative prompt gives zeros (cond and pooled).
* ``sdxl_refiner`` - OpenCLIP-bigG alone, as in the SDXL refiner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry
from sdlab.prompt.tokenizer import EOS_ID


@dataclass(frozen=True)
class EncoderSpec:
    """One text encoder as A1111 uses it.

    ``layer``: hidden state counted from the end when CLIP skip does not apply (1 = last, 2 = penultimate);
    ``final_norm``: apply the model's final LayerNorm to it; ``clip_skip``: a :data:`CLIP_SKIP_POLICIES` name;
    ``pad_id``: id written after a chunk's first EOS; ``pooled``: also return the projected pooled output;
    ``tokenizer``: a tokenizer variant name; ``width``: expected hidden size (None: take the model's).
    """

    layer: int = 1
    final_norm: bool = True
    clip_skip: str = "sd1"
    pad_id: int = EOS_ID
    pooled: bool = False
    tokenizer: str = "clip"
    width: int | None = None


@dataclass(frozen=True)
class FamilySpec:
    """Text encoders of a family, in channel-concatenation order, and whether an all-empty negative
    prompt is encoded as zeros (SDXL's ``force_zero_embeddings``)."""

    name: str
    encoders: tuple[EncoderSpec, ...]
    zero_empty_negative: bool = False


@dataclass(frozen=True)
class LayerChoice:
    """``from_end``: index into ``hidden_states`` counted from the end (1..layers+1); ``final_norm``."""

    from_end: int
    final_norm: bool


def _sd1_policy(spec: EncoderSpec, clip_skip: int, sdxl_clip_l_skip: bool) -> LayerChoice:
    return LayerChoice(clip_skip, True)


def _ignore_policy(spec: EncoderSpec, clip_skip: int, sdxl_clip_l_skip: bool) -> LayerChoice:
    return LayerChoice(spec.layer, spec.final_norm)


def _sdxl_clip_l_policy(spec: EncoderSpec, clip_skip: int, sdxl_clip_l_skip: bool) -> LayerChoice:
    return LayerChoice(clip_skip, False) if sdxl_clip_l_skip else LayerChoice(spec.layer, spec.final_norm)


ClipSkipPolicy = Callable[[EncoderSpec, int, bool], LayerChoice]

CLIP_SKIP_POLICIES: Registry[ClipSkipPolicy] = Registry.of(
    "clip skip policy",
    [("sd1", _sd1_policy), ("ignore", _ignore_policy), ("sdxl_clip_l", _sdxl_clip_l_policy)],
)

_CLIP_L = EncoderSpec(layer=1, final_norm=True, clip_skip="sd1", width=768)
_OPENCLIP_H = EncoderSpec(layer=2, final_norm=True, clip_skip="ignore", pad_id=0, tokenizer="open_clip", width=1024)
_SDXL_CLIP_L = EncoderSpec(layer=2, final_norm=False, clip_skip="sdxl_clip_l", width=768)
_SDXL_BIGG = EncoderSpec(
    layer=2, final_norm=False, clip_skip="ignore", pad_id=0, pooled=True, tokenizer="open_clip", width=1280
)

FAMILIES: Registry[FamilySpec] = Registry.of(
    "text encoder family",
    [
        ("sd1", FamilySpec("sd1", (_CLIP_L,))),
        ("sd2", FamilySpec("sd2", (_OPENCLIP_H,))),
        ("sdxl", FamilySpec("sdxl", (_SDXL_CLIP_L, _SDXL_BIGG), zero_empty_negative=True)),
        ("sdxl_refiner", FamilySpec("sdxl_refiner", (_SDXL_BIGG,), zero_empty_negative=True)),
    ],
    aliases=[("sd15", "sd1"), ("sd21", "sd2"), ("sdxl-refiner", "sdxl_refiner")],
)


def choose_layer(spec: EncoderSpec, clip_skip: int, sdxl_clip_l_skip: bool, num_layers: int) -> LayerChoice:
    """The hidden state A1111 uses for ``spec`` at ``clip_skip`` (1..num_layers+1) on a ``num_layers`` model."""
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or not 1 <= clip_skip <= num_layers + 1:
        raise InvalidRequestError(
            f"clip_skip must be an integer 1..{num_layers + 1} for a {num_layers}-layer text encoder, got {clip_skip!r}"
        )
    choice = CLIP_SKIP_POLICIES.get(spec.clip_skip)(spec, clip_skip, sdxl_clip_l_skip)
    if not 1 <= choice.from_end <= num_layers + 1:
        raise InvalidRequestError(f"layer {choice.from_end} from the end does not exist in a {num_layers}-layer encoder")
    return choice
