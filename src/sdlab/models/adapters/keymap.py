"""Network file keys -> modules of a diffusers model (UNet2DConditionModel, transformers CLIP encoders).

Supported naming schemes:

* kohya / LyCORIS: ``lora_unet_<path>``, ``lora_te_<path>`` / ``lora_te1_`` / ``lora_te2_`` (also the
  ``oft_`` / ``lycoris_`` prefixes) with dots of the module path turned into underscores. UNet paths
  come in diffusers' layout (SD1.x/SD2.x: ``down_blocks_0_attentions_0_...``) or the original LDM
  layout (SDXL: ``input_blocks_4_1_...``); the LDM -> diffusers block mapping is derived from the
  UNet config (``layers_per_block``, which up blocks have attention).
* diffusers / PEFT: ``unet.<path>.lora_A.weight``, ``text_encoder.<path>...``, ``text_encoder_2...``
  and the old attention-processor names (``...attn1.processor.to_q_lora.down.weight``).

A key is split into its module name and its part (``lora_down.weight``, ``alpha``, ``hada_w1_a``...).
Some module names A1111 can never match although the model has them (see :func:`a1111_ignores`):
sdlab skips them too, with a warning, so that results equal A1111's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

#: kohya-style prefixes -> component (the text encoder of SD1/SD2 is ``text_encoder``).
KOHYA_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    (f"{algo}_{short}_", component)
    for algo in ("lora", "oft", "lycoris")
    for short, component in (("unet", "unet"), ("te1", "text_encoder"), ("te2", "text_encoder_2"), ("te", "text_encoder"))
)

#: dotted (diffusers / PEFT) prefixes -> component.
DOTTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("unet.", "unet"),
    ("text_encoder.", "text_encoder"),
    ("text_encoder_2.", "text_encoder_2"),
)

#: part names of dotted keys, longest first (kohya keys split at their first dot instead).
DOTTED_PARTS: tuple[str, ...] = (
    "lora_A.weight", "lora_B.weight", "lora_down.weight", "lora_up.weight", "lora_mid.weight",
    "dora_scale", "alpha", "scale",
)  # fmt: skip

_OLD_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")

_RESNET_LDM = {"conv1": "in_layers.2", "norm1": "in_layers.0", "conv2": "out_layers.3", "norm2": "out_layers.0",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip
_TOP_LDM = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
            "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
            "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A weight-bearing module: ``component`` (``unet``, ``text_encoder``, ``text_encoder_2``), its
    canonical dotted ``path`` (text encoders: transformers' ``text_model.`` names), ``module_path`` (where
    it is in the loaded module; transformers 5's CLIPTextModel drops ``text_model.``; empty = ``path``) and
    ``ldm_named`` when the file used the original layout name."""

    component: str
    path: str
    ldm_named: bool = False
    module_path: str = ""

    @property
    def real_path(self) -> str:
        return self.module_path or self.path

    @property
    def full_path(self) -> str:
        return f"{self.component}.{self.path}"

    @property
    def is_text_encoder(self) -> bool:
        return self.component != "unet"


@dataclass(frozen=True)
class SplitKey:
    """A file key split into the component it names, its module name and its part."""

    component: str
    module: str  # name as written in the file (grouping key)
    flat: str  # the module name without the component prefix (underscored or dotted)
    part: str
    dotted: bool


def split_key(key: str) -> SplitKey | None:
    """Split a file key; None when it has no known prefix."""
    for prefix, component in DOTTED_PREFIXES:
        if key.startswith(prefix):
            return _split_dotted(key, prefix, component)
    for prefix, component in KOHYA_PREFIXES:
        if key.startswith(prefix):
            module, _, part = key.partition(".")
            return SplitKey(component, module, module[len(prefix):], part, dotted=False)
    return None


def _split_dotted(key: str, prefix: str, component: str) -> SplitKey | None:
    old = _OLD_PROCESSOR.search(key)
    if old:
        target = "to_out.0" if old.group(1) == "to_out" else old.group(1)
        module = key[: old.start()] + "." + target
        return SplitKey(component, module, module[len(prefix):], f"lora_{old.group(2)}.weight", dotted=True)
    for part in DOTTED_PARTS:
        if key.endswith("." + part):
            module = key[: -len(part) - 1]
            return SplitKey(component, module, module[len(prefix):], part, dotted=True)
    return None


# --------------------------------------------------------------------------------------------------
# diffusers UNet path -> original LDM path


def _ldm_block(path: str, layers: int, up_attention: tuple[bool, ...]) -> str | None:
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if m:
        kind, b, sub, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        index = 1 + (layers + 1) * b + j if kind == "down" else (layers + 1) * b + j
        where = "input_blocks" if kind == "down" else "output_blocks"
        return f"{where}.{index}.{1 if sub == 'attentions' else 0}.{_resnet_rest(sub, rest)}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", path)
    if m:
        return f"input_blocks.{(layers + 1) * (int(m.group(1)) + 1)}.0.op"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", path)
    if m:
        b = int(m.group(1))
        return f"output_blocks.{(layers + 1) * b + layers}.{2 if up_attention[b] else 1}.conv"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path)
    if m:
        index = 1 if m.group(1) == "attentions" else 2 * int(m.group(2))
        return f"middle_block.{index}.{_resnet_rest(m.group(1), m.group(3))}"
    return None


def _resnet_rest(sub: str, rest: str) -> str:
    return _RESNET_LDM.get(rest, rest) if sub == "resnets" else rest


def ldm_unet_path(path: str, config: Mapping[str, Any]) -> str | None:
    """The original-layout module path of diffusers UNet module ``path`` (None if it has none).

    ``config``: the UNet config (``layers_per_block`` int, ``up_block_types``)."""
    if path in _TOP_LDM:
        return _TOP_LDM[path]
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        layers = int(layers[0])
    up_attention = tuple("CrossAttn" in t for t in config["up_block_types"])
    return _ldm_block(path, layers, up_attention)


# --------------------------------------------------------------------------------------------------
# the index of one model


def weight_modules(module: torch.nn.Module) -> Iterable[tuple[str, torch.nn.Module]]:
    """``(path, module)`` of every sub-module holding a ``weight`` tensor."""
    for name, sub in module.named_modules():
        if name and isinstance(getattr(sub, "weight", None), torch.Tensor):
            yield name, sub


@dataclass(frozen=True)
class ModuleIndex:
    """Flat-name lookups for one model: ``(component, flat name) -> Target``; ``components``: present ones."""

    components: frozenset[str]
    lookup: Mapping[tuple[str, str], Target]

    @classmethod
    def build(cls, components: Mapping[str, torch.nn.Module]) -> ModuleIndex:
        """Index the weight-bearing modules of ``components`` (``{"unet": unet, "text_encoder": te, ...}``)."""
        lookup: dict[tuple[str, str], Target] = {}
        for component, module in components.items():
            config = getattr(module, "config", None)
            flat_te = component != "unet" and not hasattr(module, "text_model")
            for real, _ in weight_modules(module):
                path = _canonical(real) if flat_te else real
                target = Target(component, path, module_path=real if real != path else "")
                lookup[(component, path)] = target
                lookup[(component, path.replace(".", "_"))] = target
                ldm = ldm_unet_path(path, config) if component == "unet" and config is not None else None
                if ldm is not None:
                    lookup.setdefault((component, ldm.replace(".", "_")), Target(component, path, ldm_named=True))
        return cls(frozenset(components), MappingProxyType(lookup))

    def resolve(self, key: SplitKey) -> Target | None:
        """The module a split key names, or None."""
        return self.lookup.get((key.component, key.flat))


def _canonical(path: str) -> str:
    """transformers' ``text_model.``-prefixed name of a module of a flat (transformers 5) CLIPTextModel."""
    return path if path == "text_projection" else f"text_model.{path}"


def a1111_ignores(target: Target) -> bool:
    """True for modules A1111 v1.10.1 can never match by their kohya name (so it drops their keys):
    text-encoder modules outside ``text_model.encoder.layers`` (final_layer_norm, embeddings) and
    diffusers-named UNet ``conv_norm_out`` / ``add_embedding`` (no conversion rule)."""
    if target.is_text_encoder:
        return not target.path.startswith("text_model.encoder.layers.")
    return not target.ldm_named and (target.path == "conv_norm_out" or target.path.startswith("add_embedding."))
