"""Reverse conversion: diffusers / transformers modules -> the original single-file (LDM) layout.

The inverse of diffusers' single-file converters, so tests can build tiny checkpoints of every family
and tiny models can ship in the layout A1111 reads:
``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.text_model.*`` (SD1),
``cond_stage_model.model.*`` (SD2 OpenCLIP), ``conditioner.embedders.{0,1}.*`` (SDXL).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from sdlab.errors import InvalidRequestError
from sdlab.models.families import FAMILIES, UNET_PREFIX, VAE_PREFIX, TextEncoderSpec

Tensors = Mapping[str, torch.Tensor]

_RESNET_NAMES = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection",
}  # fmt: skip
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
}  # fmt: skip


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET_NAMES.get(head, head)}.{tail}"


def _unet_key(key: str, per_level: int, up_has_attn: Sequence[bool]) -> str:
    """LDM name of one diffusers UNet parameter (``per_level`` = layers_per_block)."""
    stem, _, leaf = key.rpartition(".")
    if stem in _UNET_FIXED:
        return f"{_UNET_FIXED[stem]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + b * (per_level + 1) + j
        return f"input_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (per_level + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        if m[1] == "resnets":
            return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
        return f"middle_block.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = b * (per_level + 1) + j
        return f"output_blocks.{idx}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        idx = b * (per_level + 1) + per_level
        return f"output_blocks.{idx}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"
    raise InvalidRequestError(f"UNet parameter {key!r} has no place in the LDM layout")


def unet_to_ldm(state: Tensors, config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel state dict -> LDM names (without ``model.diffusion_model.``)."""
    per_level = int(config["layers_per_block"])
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    return {_unet_key(k, per_level, up_attn): v for k, v in state.items()}


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_key(key: str, levels: int) -> str:
    """LDM name of one diffusers AutoencoderKL parameter."""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN.get(m[2], m[2])}.{m[3]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
    return key


def vae_to_ldm(state: Tensors, config: Mapping) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL state dict -> LDM names (without ``first_stage_model.``).

    Attention projections become 1x1 convolutions, as in the original files.
    """
    levels = len(config["block_out_channels"])
    out = {}
    for k, v in state.items():
        name = _vae_key(k, levels)
        is_attn_matrix = ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2
        out[name] = v.reshape(*v.shape, 1, 1) if is_attn_matrix else v
    return out


def hf_clip_to_ldm(state: Tensors) -> dict[str, torch.Tensor]:
    """transformers CLIP text state dict -> names under ``text_model.`` (as SD1/SDXL files store them)."""
    return {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v for k, v in state.items()}


_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}  # fmt: skip
_OPENCLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias",
}  # fmt: skip


def _openclip_layers(state: Tensors) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k)
        if not m:
            continue
        i, mod, leaf = int(m[1]), m[2], m[3]
        if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((i, leaf), {})[mod[-6]] = v
        else:
            out[f"transformer.resblocks.{i}.{_OPENCLIP_LAYER[mod]}.{leaf}"] = v
    for (i, leaf), parts in qkv.items():
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        out[f"transformer.resblocks.{i}.attn.in_proj_{leaf}"] = fused
    return out


def _zero_layer_like(out: Mapping[str, torch.Tensor], src: int, dst: int) -> dict[str, torch.Tensor]:
    pre = f"transformer.resblocks.{src}."
    return {
        f"transformer.resblocks.{dst}.{k[len(pre):]}": torch.zeros_like(v) for k, v in out.items() if k.startswith(pre)
    }


def hf_to_openclip(state: Tensors, hidden: int, pad_layers: int = 0) -> dict[str, torch.Tensor]:
    """transformers CLIP text state dict -> OpenCLIP names (fused ``in_proj``, ``text_projection`` = W^T).

    ``pad_layers``: zero layers appended (SD2 files hold one layer more than diffusers uses); a model
    without projection gets an identity ``text_projection``. Both are unused by SD inference.
    """
    flat = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {_OPENCLIP_TOP[k]: v for k, v in flat.items() if k in _OPENCLIP_TOP}
    out.update(_openclip_layers(flat))
    n = len({k.split(".")[2] for k in out if k.startswith("transformer.resblocks.")})
    for extra in range(pad_layers):
        out.update(_zero_layer_like(out, n - 1, n + extra))
    proj = flat.get("text_projection.weight")
    out["text_projection"] = proj.T.contiguous() if proj is not None else torch.eye(hidden)
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return out


def text_encoder_to_ldm(module: torch.nn.Module, spec: TextEncoderSpec) -> dict[str, torch.Tensor]:
    """One text encoder in its family's single-file layout, with the full prefix."""
    state = module.state_dict()
    if spec.layout == "openclip":
        converted = hf_to_openclip(state, module.config.hidden_size, spec.drop_last_layers)
    else:
        converted = hf_clip_to_ldm(state)
    return {spec.prefix + k: v for k, v in converted.items() if "position_ids" not in k}


def to_single_file_state_dict(
    unet: torch.nn.Module, vae: torch.nn.Module, text_encoders: Sequence[torch.nn.Module], family: str
) -> dict[str, torch.Tensor]:
    """The whole checkpoint of ``family`` (``sd1``, ``sd2``, ``sdxl``, ``sdxl-refiner``) as one state dict."""
    fam = FAMILIES.get(family)
    if len(text_encoders) != len(fam.text_encoders):
        raise InvalidRequestError(
            f"{fam.title} needs {len(fam.text_encoders)} text encoder(s), got {len(text_encoders)}"
        )
    out = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    out.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    for module, spec in zip(text_encoders, fam.text_encoders):
        out.update(text_encoder_to_ldm(module, spec))
    return out


def save_single_file(
    path: str | os.PathLike[str],
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: Sequence[torch.nn.Module],
    family: str,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a diffusers model as an original-layout ``.safetensors`` single file; returns the path."""
    from safetensors.torch import save_file

    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise InvalidRequestError(f"{p}: save_single_file writes .safetensors only; change the file name")
    state = {k: v.detach().contiguous() for k, v in to_single_file_state_dict(unet, vae, text_encoders, family).items()}
    save_file(state, str(p), metadata=dict(metadata or {}))
    return p


def save_vae_file(path: str | os.PathLike[str], vae: torch.nn.Module, *, prefix: str = "") -> Path:
    """Write a diffusers VAE as an A1111-style VAE ``.safetensors`` (LDM names, optional prefix)."""
    from safetensors.torch import save_file

    p = Path(path)
    state = {prefix + k: v.detach().contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}
    save_file(state, str(p))
    return p
