"""Export a training snapshot of the default model as an A1111 single-file checkpoint (fp16 tensors).

Used by ``tools/train_default_model.py --export OUT``. Writes through ``sdlab.models.convert.save_single_file``
(SD1 layout: ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``),
then loads the file back through ``sdlab.models.load.load_checkpoint`` (configs derived from shapes) and
checks that the reloaded modules give the same outputs as the snapshot's modules rounded to fp16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def modules_from_snapshot(
    path: Path, vae_state: Path | None = None
) -> tuple[dict[str, Any], torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(snapshot, unet, vae, text encoder) as float32 eval-mode modules.

    ``path``: an EMA snapshot (``ema_*.pt``) or a training checkpoint (``ckpt.pt``, its EMA weights).

    ``vae_state``: a file whose ``"vae"`` entry replaces the snapshot's VAE (the decoder fine-tune,
    ``vae_decoder.pt``; same encoder, so the same latent space). Default: ``vae_decoder.pt`` beside the
    snapshot if it exists.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    snap = torch.load(path, weights_only=False)
    if "ema_unet" in snap:  # a training checkpoint (ckpt.pt): take its EMA weights
        import train_default_model as tdm

        arch = snap.get("recipe", {}).get("arch", "v1")
        snap = {"step": snap["step"], "unet": snap["ema_unet"], "text": snap["ema_text"],
                "vae": torch.load(path.parent / "vae.pt", weights_only=True)["vae"],
                "configs": {"unet": tdm.unet_config(arch), "vae": tdm.vae_config(), "text": tdm.text_config()}}
    cfg = snap["configs"]
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"]))
    unet.load_state_dict(snap["unet"])
    vae_state = vae_state or (path.parent / "vae_decoder.pt")
    vae.load_state_dict(torch.load(vae_state, weights_only=True)["vae"] if vae_state.exists() else snap["vae"])
    snap["vae_source"] = str(vae_state) if vae_state.exists() else str(path)
    text.load_state_dict(snap["text"], strict=False)
    return snap, *(m.eval().requires_grad_(False) for m in (unet, vae, text))


@torch.no_grad()
def _probe(unet, vae, text) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[49406, 320, 736, 2682, 49407] + [49407] * 72])
    cond = text(ids).last_hidden_state
    x = torch.randn(1, 4, 16, 16, generator=gen)
    eps = unet(x, torch.tensor([500.0]), encoder_hidden_states=cond).sample
    img = vae.decode(x / 0.18215).sample
    return cond, eps, img


def export_snapshot(snapshot: Path, out: Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``out`` (.safetensors, fp16) from ``snapshot`` and verify it loads back identically."""
    from sdlab.models.convert import save_single_file
    from sdlab.models.load import load_checkpoint

    snap, unet, vae, text = modules_from_snapshot(snapshot)
    unet, vae, text = (m.half().float() for m in (unet, vae, text))  # exactly what the file will hold
    expected = _probe(unet, vae, text)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"sdlab_default_model": "toyworld-64", "training_step": str(snap["step"]), "modelspec.resolution": "64x64"}
    print(f"VAE weights from {snap['vae_source']}")
    save_single_file(out, unet.half(), vae.half(), [text.half()], "sd1", metadata=meta)
    loaded = load_checkpoint(out)
    got = _probe(loaded.unet.float(), loaded.vae.float(), loaded.text_encoders[0].float())
    diffs = [float((a - b).abs().max()) for a, b in zip(expected, got)]
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB, step {snap['step']}); reload max diffs {diffs}")
    if max(diffs) > 1e-4:
        raise RuntimeError(f"reloaded checkpoint differs from the snapshot: {diffs}")
    if card is not None:
        card_path = out.with_name("card.json")
        card_path.write_text(json.dumps({**card, "training_step": snap["step"]}, indent=2) + "\n")
    return out
