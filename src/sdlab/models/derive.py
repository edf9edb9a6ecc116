"""diffusers / transformers configs derived from tensor shapes (original single-file key names).

Every function here is pure over a ``{name: shape}`` mapping whose names have the component prefix
removed (``input_blocks.0.0.weight``, ``encoder.down.0.block.0.conv1.weight``...). Fields that shapes
cannot tell (activation, norm eps, sample size, scaling factor) come from the family's bundled
template under ``sdlab/data/configs/<family>/``; for standard shapes the result equals the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sdlab.errors import UnsupportedModelError
from sdlab.models.families import HEAD_RULES, Family, TextEncoderSpec

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ModelConfigs:
    """Configs of one checkpoint's components (plain dicts, diffusers/transformers ``from_config`` style)."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: tuple[dict[str, Any], ...]


def load_template(family: str, component: str) -> dict[str, Any]:
    """The bundled config ``sdlab/data/configs/<family>/<component>.json`` as a fresh dict."""
    res = resources.files("sdlab").joinpath("data", "configs", family, f"{component}.json")
    return json.loads(res.read_text(encoding="utf-8"))


def strip_prefix(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    """The entries of ``shapes`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in shapes.items() if k.startswith(prefix)}


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) at the start of the names."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def _shape(shapes: Shapes, name: str, what: str) -> tuple[int, ...]:
    try:
        return shapes[name]
    except KeyError:
        raise UnsupportedModelError(f"{what}: tensor {name!r} is missing") from None


# --------------------------------------------------------------------------------------------------
# UNet


@dataclass(frozen=True)
class UNetLayout:
    """Block structure of an LDM UNet: channels per level, resnets per level, attention depth per level
    (0 = no attention), mid-block attention depth."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    depths: tuple[int, ...]
    mid_depth: int


def unet_layout(s: Shapes) -> UNetLayout:
    """Levels, channels and attention depths of an LDM UNet from its shapes."""
    n_in = len(_indices(s, r"input_blocks\.(\d+)\."))
    ops = [i for i in range(n_in) if f"input_blocks.{i}.0.op.weight" in s]
    levels = len(ops) + 1
    per_level, rem = divmod(n_in - 1 - len(ops), levels)
    if n_in < 2 or rem or per_level < 1:
        raise UnsupportedModelError(f"UNet: {n_in} input blocks with {len(ops)} downsamplers form no valid layout")
    starts = [1 + b * (per_level + 1) for b in range(levels)]
    channels = tuple(_shape(s, f"input_blocks.{i}.0.out_layers.3.weight", "UNet")[0] for i in starts)
    depths = tuple(len(_indices(s, rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.")) for i in starts)
    mid_depth = len(_indices(s, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    n_out = len(_indices(s, r"output_blocks\.(\d+)\."))
    if n_out != levels * (per_level + 1):
        raise UnsupportedModelError(f"UNet: {n_out} output blocks do not mirror {levels} levels of {per_level}")
    return UNetLayout(channels, per_level, depths, mid_depth)


def transformer_layers(layout: UNetLayout) -> int | list[int]:
    """diffusers ``transformer_layers_per_block``: an int when all attention levels agree, else a list
    (levels without attention count 1). Raises if the mid block cannot be expressed."""
    attn = [d for d in layout.depths if d]
    value: int | list[int] = attn[0] if len(set(attn)) == 1 else [d or 1 for d in layout.depths]
    expected_mid = value if isinstance(value, int) else value[-1]
    if layout.mid_depth != expected_mid:
        raise UnsupportedModelError(
            f"UNet: mid-block attention depth {layout.mid_depth} differs from {expected_mid}, "
            "which diffusers' UNet2DConditionModel cannot express"
        )
    return value


def _first(s: Shapes, suffix: str) -> tuple[int, ...] | None:
    return next((v for k, v in sorted(s.items()) if k.endswith(suffix)), None)


def derive_unet_config(s: Shapes, family: Family, template: Mapping[str, Any], pooled_dim: int | None = None) -> dict:
    """diffusers UNet2DConditionModel config from LDM UNet shapes (``model.diffusion_model.`` removed).

    ``pooled_dim``: width of the pooled text embedding (SDXL text_encoder_2 projection), needed to split
    ``label_emb`` into pooled + ``time_ids`` x time-embedding width.
    """
    layout = unet_layout(s)
    if not any(layout.depths):
        raise UnsupportedModelError("UNet: no cross-attention blocks found; not a text-conditioned SD UNet")
    context = _first(s, "attn2.to_k.weight")
    proj_in = _first(s, "proj_in.weight")
    has_attn = [d > 0 for d in layout.depths]
    config = dict(template)
    config.update(
        in_channels=_shape(s, "input_blocks.0.0.weight", "UNet")[1],
        out_channels=_shape(s, "out.2.weight", "UNet")[0],
        block_out_channels=list(layout.block_out_channels),
        layers_per_block=layout.layers_per_block,
        transformer_layers_per_block=transformer_layers(layout),
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        cross_attention_dim=context[1] if context else None,
        use_linear_projection=bool(proj_in and len(proj_in) == 2),
        attention_head_dim=HEAD_RULES.get(family.head_rule)(layout.block_out_channels),
    )
    config.update(_addition_embedding(s, family, pooled_dim))
    return config


def _addition_embedding(s: Shapes, family: Family, pooled_dim: int | None) -> dict[str, Any]:
    """SDXL ``text_time`` addition embedding fields (all None for SD1/SD2)."""
    label = s.get("label_emb.0.0.weight")
    if family.time_ids == 0 or label is None:
        return {"addition_embed_type": None, "addition_time_embed_dim": None,
                "projection_class_embeddings_input_dim": None}  # fmt: skip
    adm = label[1]
    time_dim, rem = divmod(adm - (pooled_dim or 0), family.time_ids)
    if pooled_dim is None or rem or time_dim <= 0:
        raise UnsupportedModelError(
            f"UNet: label_emb input {adm} is not pooled {pooled_dim} + {family.time_ids} x time-embedding width"
        )
    return {"addition_embed_type": "text_time", "addition_time_embed_dim": time_dim,
            "projection_class_embeddings_input_dim": adm}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# VAE


def derive_vae_config(s: Shapes, template: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers AutoencoderKL config from LDM VAE shapes (``first_stage_model.`` removed)."""
    levels = _indices(s, r"encoder\.down\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise UnsupportedModelError(f"VAE: encoder down levels {levels} are missing or not contiguous")
    channels = [_shape(s, f"encoder.down.{i}.block.0.conv2.weight", "VAE")[0] for i in levels]
    config = dict(template)
    config.update(
        in_channels=_shape(s, "encoder.conv_in.weight", "VAE")[1],
        out_channels=_shape(s, "decoder.conv_out.weight", "VAE")[0],
        latent_channels=_shape(s, "decoder.conv_in.weight", "VAE")[1],
        block_out_channels=channels,
        layers_per_block=len(_indices(s, r"encoder\.down\.0\.block\.(\d+)\.")),
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
    )
    return config


# --------------------------------------------------------------------------------------------------
# text encoders


def _clip_fields(hidden: int, vocab: int, positions: int, layers: int, intermediate: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": max(1, hidden // 64),
    }


def derive_hf_clip_config(s: Shapes, template: Mapping[str, Any]) -> dict[str, Any]:
    """transformers CLIPTextConfig fields from HF-layout CLIP shapes (prefix and ``text_model.`` removed)."""
    vocab, hidden = _shape(s, "embeddings.token_embedding.weight", "CLIP text encoder")
    positions = _shape(s, "embeddings.position_embedding.weight", "CLIP text encoder")[0]
    layers = len(_indices(s, r"encoder\.layers\.(\d+)\."))
    inter = _shape(s, "encoder.layers.0.mlp.fc1.weight", "CLIP text encoder")[0]
    config = dict(template)
    config.update(_clip_fields(hidden, vocab, positions, layers, inter))
    if "text_projection.weight" in s:
        config["projection_dim"] = s["text_projection.weight"][0]
    return config


def derive_openclip_config(
    s: Shapes, template: Mapping[str, Any], drop_last_layers: int = 0, with_projection: bool = False
) -> dict[str, Any]:
    """transformers CLIPTextConfig fields from OpenCLIP shapes (prefix removed).

    ``drop_last_layers``: file layers the diffusers model omits; ``with_projection``: the model keeps
    ``text_projection`` (its width becomes ``projection_dim``)."""
    vocab, hidden = _shape(s, "token_embedding.weight", "OpenCLIP text encoder")
    positions = _shape(s, "positional_embedding", "OpenCLIP text encoder")[0]
    layers = len(_indices(s, r"transformer\.resblocks\.(\d+)\.")) - drop_last_layers
    inter = _shape(s, "transformer.resblocks.0.mlp.c_fc.weight", "OpenCLIP text encoder")[0]
    if layers < 1:
        raise UnsupportedModelError("OpenCLIP text encoder: too few transformer layers")
    config = dict(template)
    config.update(_clip_fields(hidden, vocab, positions, layers, inter))
    if with_projection and "text_projection" in s:
        config["projection_dim"] = s["text_projection"][1]
    return config


def hf_clip_shapes(shapes: Shapes, prefix: str) -> dict[str, tuple[int, ...]]:
    """HF CLIP shapes under ``prefix`` with the optional ``text_model.`` level removed."""
    return {k.removeprefix("text_model."): v for k, v in strip_prefix(shapes, prefix).items()}


def derive_text_encoder_config(shapes: Shapes, spec: TextEncoderSpec, template: Mapping[str, Any]) -> dict:
    """Config of one text encoder from full-checkpoint shapes, by its spec's layout."""
    if spec.layout == "openclip":
        s = strip_prefix(shapes, spec.prefix)
        return derive_openclip_config(s, template, spec.drop_last_layers, spec.with_projection)
    return derive_hf_clip_config(hf_clip_shapes(shapes, spec.prefix), template)


def derive_configs(
    shapes: Shapes, family: Family, unet_prefix: str, vae_prefix: str, vae_shapes: Shapes | None = None
) -> ModelConfigs:
    """All component configs of a single-file checkpoint of ``family`` from its shapes.

    ``vae_shapes``: LDM-named VAE shapes (prefix removed) of an external VAE replacing the checkpoint's.
    """
    texts = tuple(
        derive_text_encoder_config(shapes, spec, load_template(family.name, spec.name))
        for spec in family.text_encoders
    )
    pooled = texts[-1].get("projection_dim") if family.time_ids else None
    unet = derive_unet_config(strip_prefix(shapes, unet_prefix), family, load_template(family.name, "unet"), pooled)
    vae_src = vae_shapes if vae_shapes is not None else strip_prefix(shapes, vae_prefix)
    vae = derive_vae_config(vae_src, load_template(family.name, "vae"))
    return ModelConfigs(unet, vae, texts)
