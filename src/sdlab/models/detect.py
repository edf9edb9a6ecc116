"""Family, variant and prediction-type detection from key names and tensor shapes only.

Detection never reads tensor data: it works on a :class:`CheckpointHeader` (names, shapes, dtypes,
safetensors metadata) plus, optionally, the text of an A1111 sidecar ``<name>.yaml``. SD2 eps and v
checkpoints have identical shapes; without key / metadata / yaml evidence the prediction type stays
``None`` and :func:`resolve_prediction` runs A1111's functional test on the loaded UNet.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sdlab.errors import UnsupportedModelError
from sdlab.models.families import FAMILIES, FILE_KINDS, UNET_PREFIX, VARIANTS, Family
from sdlab.models.files import CheckpointHeader, read_header

EPSILON = "epsilon"
V_PREDICTION = "v_prediction"
MAX_SIDECAR_BYTES = 64 * 1024


@dataclass(frozen=True)
class Detection:
    """What a checkpoint is.

    ``family``: a name in :data:`FAMILIES`; ``variant``: a name in :data:`VARIANTS`;
    ``prediction_type``: ``"epsilon"``, ``"v_prediction"`` or ``None`` (undecided: needs the functional
    test); ``evidence``: human-readable facts behind each decision; ``layout``: ``"single-file"`` or
    ``"diffusers"``; ``latent_channels``: UNet output channels (4 for every standard family).
    """

    family: str
    variant: str
    prediction_type: str | None
    evidence: tuple[str, ...]
    latent_channels: int = 4
    layout: str = "single-file"
    path: Path | None = None


def key_prefix_counts(names: list[str] | tuple[str, ...], depth: int = 2) -> Counter[str]:
    """How many keys share each prefix of ``depth`` dotted components (for error messages)."""
    return Counter(".".join(n.split(".")[:depth]) for n in names)


def _facts(header: CheckpointHeader) -> str:
    names = [t.name for t in header.tensors]
    if not names:
        return "the file holds no tensors"
    prefixes = ", ".join(f"{p} ({n})" for p, n in key_prefix_counts(names).most_common(6))
    shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in header.tensors[:3])
    return f"{len(names)} tensors; key prefixes: {prefixes}; e.g. {shapes}"


def matching_families(names: tuple[str, ...]) -> list[Family]:
    """Families whose signature (required / forbidden key prefixes) the key names satisfy."""
    return [
        fam
        for _, fam in FAMILIES
        if all(any(n.startswith(p) for n in names) for p in fam.required_prefixes)
        and not any(n.startswith(fam.forbidden_prefixes) for n in names)
    ]


def _family(header: CheckpointHeader) -> Family:
    names = tuple(t.name for t in header.tensors)
    found = matching_families(names)
    if len(found) == 1:
        return found[0]
    for _, kind in FILE_KINDS:
        if kind.matches(names):
            raise UnsupportedModelError(
                f"{header.path}: this is a {kind.name}, not a Stable Diffusion checkpoint; {kind.advice}"
            )
    tried = ", ".join(FAMILIES.names())
    why = "matches several families" if found else "matches no known family"
    raise UnsupportedModelError(f"{header.path}: {why} (tried {tried}); {_facts(header)}")


def _variant(shapes: Mapping[str, tuple[int, ...]], path: Path) -> tuple[str, int, str]:
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    conv_out = shapes.get(UNET_PREFIX + "out.2.weight")
    if not conv_in or not conv_out or len(conv_in) != 4:
        raise UnsupportedModelError(f"{path}: the UNet's input/output convolutions are missing (truncated file?)")
    latent, in_ch = conv_out[0], conv_in[1]
    for name, var in VARIANTS:
        if var.in_channels(latent) == in_ch:
            return name, latent, f"UNet input has {in_ch} channels for {latent} latent channels: {var.description}"
    known = ", ".join(f"{n} ({v.in_channels(latent)})" for n, v in VARIANTS)
    raise UnsupportedModelError(f"{path}: UNet input has {in_ch} channels; known variants: {known}")


# --------------------------------------------------------------------------------------------------
# prediction type evidence


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def prediction_from_metadata(names: set[str], metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(prediction type, evidence) from a ``v_pred`` key or safetensors metadata, if any says."""
    if "v_pred" in names:
        return V_PREDICTION, "checkpoint has a 'v_pred' key"
    spec = metadata.get("modelspec.prediction_type", "").strip().lower()
    if spec in ("v", "v_prediction", "v-prediction"):
        return V_PREDICTION, f"metadata modelspec.prediction_type = {spec!r}"
    if spec in ("epsilon", "eps"):
        return EPSILON, f"metadata modelspec.prediction_type = {spec!r}"
    if "ss_v_parameterization" in metadata:
        value = metadata["ss_v_parameterization"]
        kind = V_PREDICTION if _truthy(value) else EPSILON
        return kind, f"metadata ss_v_parameterization = {value!r}"
    return None


def prediction_from_yaml(text: str) -> tuple[str, str]:
    """(prediction type, evidence) from an A1111 sidecar config; only ``parameterization`` is read."""
    m = re.search(r"^\s*parameterization\s*:\s*[\"']?([A-Za-z_]+)[\"']?\s*(#.*)?$", text, re.MULTILINE)
    if m and m.group(1).lower() == "v":
        return V_PREDICTION, 'sidecar yaml says parameterization: "v"'
    if m:
        return EPSILON, f"sidecar yaml says parameterization: {m.group(1)!r}"
    return EPSILON, "sidecar yaml has no parameterization (LDM default: eps)"


def read_sidecar_yaml(path: Path) -> str | None:
    """Text of ``<stem>.yaml`` next to a checkpoint (at most 64 KiB), or None if absent."""
    yaml = path.with_suffix(".yaml")
    if not yaml.is_file() or yaml.stat().st_size > MAX_SIDECAR_BYTES:
        return None
    return yaml.read_text(encoding="utf-8", errors="replace")


def _prediction(
    header: CheckpointHeader, family: Family, variant: str, sidecar: str | None
) -> tuple[str | None, str]:
    from_meta = prediction_from_metadata({t.name for t in header.tensors}, header.metadata)
    if from_meta:
        return from_meta
    if sidecar is not None:
        return prediction_from_yaml(sidecar)
    if family.ambiguous_prediction and variant == "inpainting":
        return EPSILON, f"{family.title} inpainting checkpoints are eps (as A1111 decides without a test)"
    if family.ambiguous_prediction:
        return None, "no key, metadata or sidecar yaml tells eps from v; the functional test decides"
    return EPSILON, f"{family.title} checkpoints predict eps unless marked otherwise"


# --------------------------------------------------------------------------------------------------
# entry points


def detect_header(header: CheckpointHeader, sidecar_yaml: str | None = None) -> Detection:
    """Detect family, variant and (when the evidence allows) prediction type from shapes and metadata."""
    family = _family(header)
    shapes = header.shapes()
    variant, latent, variant_why = _variant(shapes, header.path)
    prediction, prediction_why = _prediction(header, family, variant, sidecar_yaml)
    required = ", ".join(family.required_prefixes)
    evidence = (f"{family.title}: keys under {required}", variant_why, prediction_why)
    return Detection(family.name, variant, prediction, evidence, latent, "single-file", header.path)


def detect_diffusers_folder(folder: Path) -> Detection:
    """Detect a diffusers-format folder from its ``model_index.json`` and component configs."""
    def cfg(*parts: str) -> dict:
        p = folder.joinpath(*parts)
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnsupportedModelError(f"{p}: not valid JSON ({exc})") from None

    index, unet = cfg("model_index.json"), cfg("unet", "config.json")
    if not unet:
        raise UnsupportedModelError(f"{folder}: diffusers folder without unet/config.json")
    has_te = bool(cfg("text_encoder", "config.json"))
    text_time = unet.get("addition_embed_type") == "text_time"
    family = ("sdxl" if has_te else "sdxl-refiner") if text_time else (
        "sd2" if cfg("text_encoder", "config.json").get("hidden_act") == "gelu" else "sd1"
    )
    latent, in_ch = int(unet.get("out_channels", 4)), int(unet.get("in_channels", 4))
    variant = next((n for n, v in VARIANTS if v.in_channels(latent) == in_ch), None)
    if variant is None:
        raise UnsupportedModelError(f"{folder}: UNet input has {in_ch} channels, no known variant")
    prediction = cfg("scheduler", "scheduler_config.json").get("prediction_type", EPSILON)
    evidence = (
        f"diffusers folder ({index.get('_class_name', 'no model_index class')}); "
        f"text_time={text_time}, text_encoder={has_te}",
        f"unet in_channels {in_ch}",
        f"scheduler prediction_type {prediction!r}",
    )
    return Detection(family, variant, prediction, evidence, latent, "diffusers", folder)


def detect(path: str | os.PathLike[str]) -> Detection:
    """Detect a checkpoint file (reading its header and sidecar yaml) or a diffusers folder."""
    p = Path(path)
    if p.is_dir():
        if (p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file():
            return detect_diffusers_folder(p)
        raise UnsupportedModelError(f"{p}: a folder without model_index.json is not a diffusers model")
    return detect_header(read_header(p), read_sidecar_yaml(p))


# --------------------------------------------------------------------------------------------------
# A1111's functional test for SD2 eps vs v


@torch.no_grad()
def v_parameterization_score(unet: torch.nn.Module) -> float:
    """mean(unet(x, t=999, ctx) - x) for x = ctx = 0.5 everywhere (x: 1 x C x 8 x 8, ctx: 1 x 2 x D).

    A1111 (``is_using_v_parameterization_for_sd2``) runs this in float32 on the CPU and calls a model
    v-prediction when the score is below -1; pass a float32 module for the same numbers.
    """
    cfg = unet.config
    param = next(unet.parameters())
    x = torch.full((1, cfg.in_channels, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    ctx = torch.full((1, 2, cfg.cross_attention_dim), 0.5, dtype=param.dtype, device=param.device)
    t = torch.tensor([999], device=param.device)
    out = unet(x, t, encoder_hidden_states=ctx).sample
    return float((out.float() - x.float()[:, : out.shape[1]]).mean())


def resolve_prediction(detection: Detection, unet: torch.nn.Module) -> Detection:
    """Fill an undecided prediction type with A1111's functional test (score < -1 means v)."""
    if detection.prediction_type is not None:
        return detection
    score = v_parameterization_score(unet)
    kind = V_PREDICTION if score < -1 else EPSILON
    why = f"functional test (A1111): mean(unet(0.5) - 0.5) at t=999 = {score:.4f} -> {kind}"
    return replace(detection, prediction_type=kind, evidence=detection.evidence + (why,))
