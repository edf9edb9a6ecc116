"""Tiny random checkpoints of every family, in the original single-file layout (about a second each).

Every parameter is drawn from N(0, 0.1) with a fixed seed, so two tensors of the same shape differ and
a swapped key cannot go unnoticed. Sizes: UNet (32, 64) channels, 1 resnet per level; VAE (32, 64);
text encoders of width 32-64 with the real CLIP vocabulary (49408) and 77 positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sdlab.models.convert import save_single_file, save_vae_file
from sdlab.models.families import FAMILIES, HEAD_RULES, VARIANTS

BLOCKS = (32, 64)


@dataclass(frozen=True, eq=False)
class TinyModel:
    """The modules a tiny checkpoint was written from, and where."""

    family: str
    variant: str
    path: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: tuple[torch.nn.Module, ...]


def _randomize(module: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module.eval()


def tiny_clip(hidden: int, layers: int, act: str, projection: int | None, gen: torch.Generator) -> torch.nn.Module:
    """A random CLIP text encoder (WithProjection when ``projection`` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), hidden_act=act, projection_dim=projection or hidden,
        vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )  # fmt: skip
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _randomize(cls(cfg), gen)


def tiny_vae(gen: torch.Generator, latent: int = 4) -> torch.nn.Module:
    """A random AutoencoderKL with 2 levels (2x downsampling)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        block_out_channels=BLOCKS, layers_per_block=1, latent_channels=latent, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    return _randomize(vae, gen)


def _unet_kwargs(family: str) -> dict:
    head_rule = HEAD_RULES.get(FAMILIES.get(family).head_rule)
    common = {"block_out_channels": BLOCKS, "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 8,
              "attention_head_dim": head_rule(BLOCKS)}  # fmt: skip
    sd = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
          "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}  # fmt: skip
    xl = {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
          "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "use_linear_projection": True,
          "addition_embed_type": "text_time", "addition_time_embed_dim": 8}  # fmt: skip
    per_family = {
        "sd1": {**sd, "cross_attention_dim": 64},
        "sd2": {**sd, "cross_attention_dim": 64, "use_linear_projection": True},
        "sdxl": {**xl, "cross_attention_dim": 96, "transformer_layers_per_block": (1, 2),
                 "projection_class_embeddings_input_dim": 64 + 6 * 8},
        "sdxl-refiner": {**xl, "cross_attention_dim": 64, "transformer_layers_per_block": 2,
                         "projection_class_embeddings_input_dim": 64 + 5 * 8},
    }  # fmt: skip
    return {**common, **per_family[family]}


def tiny_unet(family: str, variant: str, gen: torch.Generator) -> torch.nn.Module:
    """A random UNet2DConditionModel shaped like ``family`` (channels scaled down)."""
    from diffusers import UNet2DConditionModel

    in_ch = VARIANTS.get(variant).in_channels(4)
    return _randomize(UNet2DConditionModel(in_channels=in_ch, out_channels=4, **_unet_kwargs(family)), gen)


def tiny_text_encoders(family: str, gen: torch.Generator) -> tuple[torch.nn.Module, ...]:
    """Random text encoders in the family's order."""
    return {
        "sd1": lambda: (tiny_clip(64, 2, "quick_gelu", None, gen),),
        "sd2": lambda: (tiny_clip(64, 2, "gelu", None, gen),),
        "sdxl": lambda: (tiny_clip(32, 2, "quick_gelu", None, gen), tiny_clip(64, 2, "gelu", 64, gen)),
        "sdxl-refiner": lambda: (tiny_clip(64, 2, "gelu", 64, gen),),
    }[family]()


def make_tiny_checkpoint(
    path: str | Path,
    family: str = "sd1",
    variant: str = "standard",
    *,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
) -> TinyModel:
    """Build and save a tiny random checkpoint of ``family`` / ``variant``; returns its modules."""
    gen = torch.Generator().manual_seed(seed)
    unet, vae = tiny_unet(family, variant, gen), tiny_vae(gen)
    texts = tiny_text_encoders(family, gen)
    p = save_single_file(path, unet, vae, texts, family, metadata=metadata)
    return TinyModel(family, variant, p, unet, vae, texts)


def make_tiny_vae_file(path: str | Path, *, seed: int = 1, prefix: str = "") -> torch.nn.Module:
    """Save a tiny random A1111-style VAE file (LDM names, optional ``first_stage_model.``)."""
    vae = tiny_vae(torch.Generator().manual_seed(seed))
    save_vae_file(path, vae, prefix=prefix)
    return vae


def make_tiny_lora_file(path: str | Path, *, rank: int = 2, seed: int = 2) -> Path:
    """Save a tiny kohya-style LoRA (``lora_unet_*`` / ``lora_te_*`` with ``.alpha``) for the tiny SD1 model."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    targets = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (32, 32),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (32, 64),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (64, 64),
    }
    state = {}
    for name, (out_f, in_f) in targets.items():
        state[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen) * 0.1
        state[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * 0.1
        state[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return Path(path)


def write_diffusers_folder(folder: str | Path, model: TinyModel, prediction_type: str = "epsilon") -> Path:
    """Save a tiny model as a diffusers-format folder (model_index.json + components)."""
    root = Path(folder)
    names = ["unet", "vae"] + [s.name for s in FAMILIES.get(model.family).text_encoders]
    for name, module in zip(names, (model.unet, model.vae, *model.text_encoders)):
        module.save_pretrained(root / name)
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction_type}))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def standard_meta_modules(family: str) -> tuple[torch.nn.Module, torch.nn.Module, tuple[torch.nn.Module, ...]]:
    """Full-size modules of ``family`` built from the bundled configs on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sdlab.models.derive import load_template
    from sdlab.models.load import empty_text_encoder

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(load_template(family, "unet"))
        vae = AutoencoderKL.from_config(load_template(family, "vae"))
    texts = tuple(
        empty_text_encoder(load_template(family, spec.name), spec.with_projection)
        for spec in FAMILIES.get(family).text_encoders
    )
    return unet, vae, texts


def standard_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of a standard full-size single-file checkpoint of ``family`` (no data)."""
    from sdlab.models.convert import to_single_file_state_dict

    unet, vae, texts = standard_meta_modules(family)
    return {k: tuple(v.shape) for k, v in to_single_file_state_dict(unet, vae, texts, family).items()}
