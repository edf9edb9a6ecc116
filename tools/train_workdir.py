"""Seeding and resuming a work dir of tools/train_default_model.py: from a shipped checkpoint file (VAE,
text encoder, or the whole model), AdamW moments across a change of the trainable parameters, and the
facts of a work dir's run that ``--export`` writes beside the checkpoint (``card.json``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from train_default_model import SEED, Recipe, build, log, save_atomic, text_config, unet_config, vae_config


def _write_vae(model: Any, path: Path, r: Recipe, workdir: Path) -> None:
    """``vae.pt`` from a loaded checkpoint's VAE (VAE phase done), unless the work dir has one."""
    if not (workdir / "vae.pt").exists():
        save_atomic({"vae": model.vae.state_dict(), "cycles_done": len(r.vae_cycles), "final_loss": None,
                     "seconds": 0.0, "seeded_from": str(path)}, workdir / "vae.pt")
        log(f"VAE taken from {path}")


def seed_from_checkpoint(path: Path, r: Recipe, workdir: Path) -> dict[str, torch.Tensor]:
    """Start a run from a shipped checkpoint: write its VAE as ``vae.pt`` (VAE phase done) and return
    its text encoder's state. The UNet still starts from scratch (it may have another ``--arch``).

    The shipped VAE carries the fine-tuned decoder and the unchanged encoder, so latents match the run
    that produced it.
    """
    from sdlab.models.load import load_checkpoint

    model = load_checkpoint(path)
    _write_vae(model, path, r, workdir)
    return model.text_encoders[0].state_dict()


def seed_run(path: Path, r: Recipe, workdir: Path, step: int) -> None:
    """Start a work dir from a shipped checkpoint's UNet, text encoder and VAE: ``vae.pt`` and a
    ``ckpt.pt`` at ``step`` whose EMA equals the weights (fp16 in the file, trained on in fp32) and
    whose AdamW moments start fresh. Nothing is written if the work dir already has a ``ckpt.pt``."""
    from sdlab.models.load import load_checkpoint

    if (workdir / "ckpt.pt").exists():
        return
    model = load_checkpoint(path)
    _write_vae(model, path, r, workdir)
    unet = {k: v.float() for k, v in model.unet.state_dict().items()}
    text = {k: v.float() for k, v in model.text_encoders[0].state_dict().items()}
    save_atomic({"unet": unet, "text": text, "ema_unet": unet, "ema_text": text, "opt": None, "step": step,
                 "seconds": 0.0, "recipe": asdict(r), "seeded_from": str(path)}, workdir / "ckpt.pt")
    log(f"work dir seeded from {path} at step {step} (fresh optimizer moments)")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Resume AdamW moments. A checkpoint of a frozen-text run has one group (the UNet's); when the
    text encoder is now trained too, the UNet moments are kept and the text encoder starts fresh."""
    if len(state["param_groups"]) == len(opt.param_groups):
        opt.load_state_dict(state)
        return
    old_ids = [i for g in state["param_groups"] for i in g["params"]]
    new = opt.state_dict()
    first = new["param_groups"][0]["params"]
    if len(state["param_groups"]) != 1 or len(old_ids) != len(first):
        raise SystemExit("checkpoint optimizer does not match the trainable parameters; use a new --workdir")
    new["state"] = {first[k]: state["state"][i] for k, i in enumerate(old_ids) if i in state["state"]}
    opt.load_state_dict(new)
    log("optimizer: UNet moments resumed, text encoder moments fresh")


def training_card(workdir: Path, r: Recipe) -> dict[str, Any]:
    """Facts about the training run in ``workdir`` for the model card (card.json)."""
    def facts(name: str, keys: tuple[str, ...]) -> dict[str, Any]:
        p = workdir / name
        if not p.exists():
            return {}
        ck = torch.load(p, weights_only=False, map_location="cpu")
        return {k: ck[k] for k in keys if k in ck}

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    configs = {"unet": unet_config(r.arch), "vae": vae_config(), "text": text_config()}
    return {
        "name": "toyworld-64",
        "world": "sdlab.toyworld (64x64, 10 colours, 5 shapes, 9 positions, 2 sizes; held-out pairs in world.py)",
        "parameters": {k: n(build(k, c)) for k, c in configs.items()},
        "configs": configs,
        "recipe": asdict(r),
        "vae": facts("vae.pt", ("cycles_done", "final_loss", "seconds")),
        "vae_decoder_finetune": facts("vae_decoder.pt", ("step", "final_loss", "seconds")),
        "unet_and_text": facts("ckpt.pt", ("step", "seconds")),
        "seed": SEED,
        "machine": "2 shared CPU cores, one torch thread per process",
    }
