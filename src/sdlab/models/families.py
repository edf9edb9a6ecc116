"""Model families and other file kinds, declared as data (signatures over key names).

A family is recognised by the key prefixes its single-file checkpoint must have and must not have;
its variant (standard / inpainting / instruct-pix2pix) by the UNet's input channels. Everything that
differs between families (text encoder layouts, latent scale, head rule, SDXL time ids) is a field
here, never an if-chain elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdlab.registry import Registry

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class TextEncoderSpec:
    """How one text encoder is stored in a single-file checkpoint.

    ``layout``: ``"hf"`` (transformers CLIP names under ``prefix``) or ``"openclip"`` (``resblocks``,
    fused ``in_proj``). ``drop_last_layers``: transformer layers in the file that the diffusers model
    omits (SD2 conditions on the penultimate layer, so diffusers keeps 23 of OpenCLIP-H's 24).
    """

    name: str  # diffusers component name: "text_encoder" | "text_encoder_2"
    prefix: str
    layout: str
    with_projection: bool
    drop_last_layers: int = 0


@dataclass(frozen=True)
class Family:
    """One model family: its detection signature and the facts needed to build and run it.

    ``latent_scale``: VAE latent scaling factor. ``head_rule``: name in :data:`HEAD_RULES`.
    ``time_ids``: number of SDXL micro-conditioning ids (6 base, 5 refiner, 0 none).
    ``ambiguous_prediction``: eps and v checkpoints share shapes (SD2), so prediction needs evidence.
    """

    name: str
    title: str
    required_prefixes: tuple[str, ...]
    forbidden_prefixes: tuple[str, ...]
    text_encoders: tuple[TextEncoderSpec, ...]
    latent_scale: float
    head_rule: str
    time_ids: int = 0
    ambiguous_prediction: bool = False


@dataclass(frozen=True)
class Variant:
    """A UNet input variant: ``in_channels = latent * latent_multiple + extra`` (e.g. 4*2+1 = 9)."""

    name: str
    latent_multiple: int
    extra: int
    description: str

    def in_channels(self, latent_channels: int) -> int:
        """UNet input channels of this variant for ``latent_channels`` latent channels."""
        return latent_channels * self.latent_multiple + self.extra


CLIP_L_SD1 = TextEncoderSpec("text_encoder", "cond_stage_model.transformer.", "hf", False)
OPENCLIP_SD2 = TextEncoderSpec("text_encoder", "cond_stage_model.model.", "openclip", False, drop_last_layers=1)
CLIP_L_SDXL = TextEncoderSpec("text_encoder", "conditioner.embedders.0.transformer.", "hf", False)
OPENCLIP_G_SDXL = TextEncoderSpec("text_encoder_2", "conditioner.embedders.1.model.", "openclip", True)
OPENCLIP_G_REFINER = TextEncoderSpec("text_encoder_2", "conditioner.embedders.0.model.", "openclip", True)

_LABEL_EMB = UNET_PREFIX + "label_emb."

FAMILIES: Registry[Family] = Registry.of(
    "model family",
    [
        ("sd1", Family(
            "sd1", "Stable Diffusion 1.x",
            required_prefixes=(UNET_PREFIX, CLIP_L_SD1.prefix),
            forbidden_prefixes=(_LABEL_EMB, "conditioner.", OPENCLIP_SD2.prefix),
            text_encoders=(CLIP_L_SD1,), latent_scale=0.18215, head_rule="sd1-8-heads",
        )),
        ("sd2", Family(
            "sd2", "Stable Diffusion 2.x",
            required_prefixes=(UNET_PREFIX, OPENCLIP_SD2.prefix),
            forbidden_prefixes=(_LABEL_EMB, "conditioner.", CLIP_L_SD1.prefix),
            text_encoders=(OPENCLIP_SD2,), latent_scale=0.18215, head_rule="head-dim-64",
            ambiguous_prediction=True,
        )),
        ("sdxl", Family(
            "sdxl", "Stable Diffusion XL base",
            required_prefixes=(_LABEL_EMB, CLIP_L_SDXL.prefix, OPENCLIP_G_SDXL.prefix),
            forbidden_prefixes=("cond_stage_model.",),
            text_encoders=(CLIP_L_SDXL, OPENCLIP_G_SDXL), latent_scale=0.13025, head_rule="head-dim-64",
            time_ids=6,
        )),
        ("sdxl-refiner", Family(
            "sdxl-refiner", "Stable Diffusion XL refiner",
            required_prefixes=(_LABEL_EMB, OPENCLIP_G_REFINER.prefix),
            forbidden_prefixes=("cond_stage_model.", "conditioner.embedders.1.", CLIP_L_SDXL.prefix),
            text_encoders=(OPENCLIP_G_REFINER,), latent_scale=0.13025, head_rule="head-dim-64",
            time_ids=5,
        )),
    ],
    aliases=[("sd15", "sd1"), ("sd1.5", "sd1"), ("sd21", "sd2"), ("sd2.1", "sd2"), ("xl", "sdxl")],
)  # fmt: skip

VARIANTS: Registry[Variant] = Registry.of(
    "model variant",
    [
        ("standard", Variant("standard", 1, 0, "text-to-image")),
        ("inpainting", Variant("inpainting", 2, 1, "inpainting: latent + mask + masked-image latent")),
        ("instruct-pix2pix", Variant("instruct-pix2pix", 2, 0, "instruct-pix2pix: latent + image latent")),
    ],
    aliases=[("inpaint", "inpainting"), ("ip2p", "instruct-pix2pix")],
)


def _heads_fixed_8(block_out_channels: tuple[int, ...]) -> int:
    """SD1: 8 attention heads everywhere (diffusers ``attention_head_dim=8``, a misnomer)."""
    return 8


def _heads_dim_64(block_out_channels: tuple[int, ...]) -> list[int]:
    """SD2 / SDXL: head dimension 64, so heads = channels // 64 per block (at least 1)."""
    return [max(1, c // 64) for c in block_out_channels]


HEAD_RULES: Registry = Registry.of(
    "attention head rule", [("sd1-8-heads", _heads_fixed_8), ("head-dim-64", _heads_dim_64)]
)


@dataclass(frozen=True)
class FileKind:
    """A kind of model file that is not a checkpoint (LoRA, VAE...), recognised by key patterns.

    Matches when any key starts with one of ``prefixes`` or contains one of ``fragments``, and no
    key starts with one of ``unless_prefixes``.
    """

    name: str
    advice: str
    prefixes: tuple[str, ...] = ()
    fragments: tuple[str, ...] = ()
    unless_prefixes: tuple[str, ...] = (UNET_PREFIX,)

    def matches(self, keys: tuple[str, ...]) -> bool:
        """Whether the key set shows this file kind."""
        if any(k.startswith(self.unless_prefixes) for k in keys):
            return False
        by_prefix = bool(self.prefixes) and any(k.startswith(self.prefixes) for k in keys)
        return by_prefix or any(f in k for k in keys for f in self.fragments)


FILE_KINDS: Registry[FileKind] = Registry.of(
    "file kind",
    [
        ("LyCORIS", FileKind("LyCORIS (LoHa/LoKr/IA3)", "put it in models/LyCORIS and use <lora:name:1>",
                             fragments=(".hada_w1_a", ".lokr_w1", ".on_input", ".diff_b"))),
        ("LoRA", FileKind("LoRA", "put it in models/Lora and use <lora:name:1> in the prompt",
                          prefixes=("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"),
                          fragments=(".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down."))),
        ("ControlNet", FileKind("ControlNet", "ControlNet models are not supported", prefixes=("control_model.",))),
        ("VAE", FileKind("VAE", "put it in models/VAE and select it as the VAE",
                         prefixes=("encoder.conv_in.", "decoder.conv_out.", VAE_PREFIX + "encoder."),
                         unless_prefixes=(UNET_PREFIX, "cond_stage_model.", "conditioner."))),
        ("textual inversion embedding", FileKind(
            "textual inversion embedding", "put it in models/embeddings and use its name in the prompt",
            prefixes=("string_to_param", "string_to_token", "emb_params", "clip_l", "clip_g"))),
        ("upscaler", FileKind("upscaler (ESRGAN/SwinIR/DAT/HAT)", "put it in models/ESRGAN (or its kind's folder)",
                              prefixes=("conv_first.", "model.0.weight", "params_ema", "params.", "body.",
                                        "layers.0.residual_group."))),
        ("face restoration", FileKind("face restoration model (GFPGAN/CodeFormer)",
                                      "put it in models/GFPGAN or models/Codeformer",
                                      prefixes=("stylegan_decoder.", "quantize.embedding", "position_emb"))),
    ],
)
