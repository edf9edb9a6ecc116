"""Train sdlab's bundled default model on the toy world (sdlab.toyworld), reproducibly, on CPU.

Architecture (SD-1.x classes, shapes chosen so the A1111 single-file loader derives the configs):
UNet2DConditionModel ``--arch v2`` (shipped): (64, 128, 128), one layer per block, 16 -> 8 -> 4 with
cross-attention at 8x8, 4x4 and in the mid block (``v1``, the first model: (64, 128), 16 -> 8);
AutoencoderKL (32, 64, 64) with 4x downsampling (64x64 RGB <-> 16x16x4 latents, SD1 scaling factor
0.18215 folded into quant convs), CLIPTextModel of width 64 with the real CLIP tokenizer bundled in sdlab.

Curriculum: (1) VAE, reconstruction + small KL on 32x32 crops, in cosine cycles (800 + 2000 steps);
(2) rescale the VAE so latents * 0.18215 have std ~1; (3) cache latent means of 12,000 fixed training
scenes; (4) UNet (+ text encoder unless ``--freeze-text``), epsilon prediction on SD1's scaled-linear
schedule (0.00085..0.012, 1000 steps), min-SNR-5 weights (``--x0-weight-from``: times clamp(1/snr, 1,
20)), t uniform or partly drawn from t >= ``--high-t-from`` (``--high-t-frac``), 10% empty captions
(encoded as the Engine does: BOS + EOS padding to 77, sdlab's own CLIP tokenizer), AdamW, warm-up +
cosine (``--schedule-from``: a continued run's own schedule), EMA 0.999; (5) in a second
single-threaded process, fine-tune the VAE decoder alone (the encoder, hence the latent space, stays
fixed): ``--decoder``.

The shipped checkpoint (2026-12-06) came from six UNet phases; tools/TRAINING_HISTORY.md gives each one's
command, run time, final loss and what it measured, and the four phases that were tried and not shipped.
The VAE, fine-tuned decoder included, is the first model's (``--init-vae-from`` any toyworld-64
checkpoint). Phases 1-3 (position) ran in one work dir W, phase 4 (word order) in W2 seeded with W's
ckpt.pt, vae.pt and latents.pt; phases 8 (free phrasing, emphasis) and 9 (prompt editing) each seeded
from the previous phase's exported file with ``--resume-from``:
    --workdir W --arch v2 --init-vae-from toyworld-64.safetensors --freeze-text --unet-steps 2000
    --workdir W --arch v2 --freeze-text --unet-steps 8000 --x0-weight-from 0 --high-t-frac 0.5 --high-t-from 600
    --workdir W --arch v2 --unet-steps 18000 --schedule-from 8000 --unet-lr 4e-4 --text-lr-scale 0.3 \\
        --x0-weight-from 0 --high-t-frac 0.35 --high-t-from 600
    --workdir W2 --arch v2 --unet-steps 24000 --schedule-from 18000 --unet-lr 2e-4 --text-lr-scale 0.6 \\
        --x0-weight-from 0 --high-t-frac 0.35 --high-t-from 600 --clause-frac 0.5
    --workdir W6 --arch v2 --resume-from toyworld-64.safetensors --unet-steps 29000 --schedule-from 24000 \\
        --unet-lr 2e-4 --text-lr-scale 0.6 --x0-weight-from 0 --high-t-frac 0.35 --high-t-from 600 \\
        --clause-frac 0.5 --emphasis-frac 0.5 --free-frac 0.3 --emphasis-target blend
    --workdir W7 --arch v2 --resume-from toyworld-64.safetensors --unet-steps 32000 --schedule-from 29000 \\
        --unet-lr 1.5e-4 --text-lr-scale 0.6 --x0-weight-from 0 --high-t-frac 0.35 --high-t-from 600 \\
        --clause-frac 0.5 --emphasis-frac 0.5 --free-frac 0.3 --emphasis-target blend \\
        --late-swap-frac 0.5 --late-swap-below 500
The text encoder stays random and frozen until step 8000, so position words keep distinct features
while the UNet learns the layout at high noise; then it trains at 0.3x, later 0.6x, the UNet's rate.

Everything is seeded from the step number, so a run resumed from WORKDIR/ckpt.pt continues exactly.
On 2 shared cores use one torch thread per process (TRAIN_THREADS, default 1): two 2-thread processes
collapse. Usage (every phase resumes automatically from the work dir):
    nohup .venv/bin/python tools/train_default_model.py --workdir W ... >> W/log.txt 2>&1 &
    nohup nice .venv/bin/python tools/train_default_model.py --decoder >> /work/train/decoder_log.txt 2>&1 &
    .venv/bin/python tools/train_default_model.py --workdir W --arch v2 --export src/sdlab/data/default_model/toyworld-64.safetensors
``--export`` takes WORKDIR/ema_latest.pt (or ``--snapshot``) and WORKDIR/vae_decoder.pt if present.
Run time, steps and final losses of the shipped checkpoint are in src/sdlab/data/default_model/card.json.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20261123
WORKDIR = Path("/work/train")
SCALING_FACTOR = 0.18215


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters; steps are optimizer steps."""

    vae_cycles: tuple[int, ...] = (800, 2000)
    vae_lr: tuple[float, ...] = (1e-3, 1.5e-3)
    vae_batch: int = 16
    vae_crop: int = 32
    kl_weight: float = 1e-6
    decoder_steps: int = 3000
    decoder_lr: float = 5e-4
    decoder_batch: int = 8
    cache_size: int = 12000
    unet_steps: int = 8000
    unet_lr: float = 1e-3
    batch: int = 32
    warmup: int = 200
    min_lr_ratio: float = 0.05
    empty_caption: float = 0.1
    clause_frac: float = 0.0
    emphasis_frac: float = 0.0
    free_frac: float = 0.0
    emphasis_max: float = 1.5
    emphasis_target: str = "swap"
    late_swap_frac: float = 0.0
    late_swap_below: int = 400
    snr_gamma: float = 5.0
    arch: str = "v2"
    x0_weight_from: int | None = None
    x0_weight_max: float = 20.0
    freeze_text: bool = False
    high_t_frac: float = 0.0
    high_t_from: int = 700
    schedule_from: int = 0
    text_lr_scale: float = 1.0
    ema_decay: float = 0.999
    save_every_s: float = 300.0
    snapshot_every: int = 1000


UNET_ARCHS: dict[str, dict[str, Any]] = {
    # v1 (the first model): 16x16 -> 8x8; cross-attention at 8x8 and in the mid block.
    "v1": dict(
        block_out_channels=(64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ),
    # v2 (shipped): one level deeper (16 -> 8 -> 4) so zero padding marks every cell of the 4x4 level:
    # the only source of absolute position in a UNet without positional embeddings (v1 never learned it).
    "v2": dict(
        block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ),
}


def unet_config(arch: str = "v1") -> dict[str, Any]:
    """UNet2DConditionModel config of architecture ``arch`` (a key of UNET_ARCHS)."""
    return dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=8, norm_num_groups=32, use_linear_projection=False, **UNET_ARCHS[arch],
    )


def vae_config() -> dict[str, Any]:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), norm_num_groups=32, sample_size=64, scaling_factor=SCALING_FACTOR,
    )


def text_config() -> dict[str, Any]:
    return dict(
        vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=64,
    )


def build(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """A fresh model of ``kind`` ("unet", "vae", "text") from its config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if kind == "unet":
        return UNet2DConditionModel(**config)
    if kind == "vae":
        return AutoencoderKL(**config)
    return CLIPTextModel(CLIPTextConfig(**config))


def tokenizer():
    """sdlab's own CLIP tokenizer over the bundled vocabulary (what the Engine uses for SD1 prompts)."""
    from sdlab.prompt.tokenizer import ClipTokenizer

    return ClipTokenizer.bundled("clip")


def tokens(tok, captions: list[str]) -> torch.Tensor:
    """(B, 77) ids as SD1 / A1111 encode a short prompt: BOS, tokens (<= 75), EOS, EOS padding."""
    rows = [[tok.bos_id, *tok.encode(c)[:75], tok.eos_id] for c in captions]
    return torch.tensor([row + [tok.eos_id] * (77 - len(row)) for row in rows])


def batch_images(seeds: np.ndarray) -> torch.Tensor:
    """Training images for ``seeds`` as a (B, 3, 64, 64) tensor in -1..1."""
    from sdlab.toyworld import training_sample

    return image_tensor(np.stack([np.asarray(training_sample(int(s))[0]) for s in seeds]))


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, 3, H, W) float tensor in -1..1 of uint8 images (B, H, W, 3)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_crops(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` crop (offsets multiples of 4) of each image of a batch."""
    n = (x.shape[-1] - size) // 4 + 1
    offs = rng.integers(0, n, (len(x), 2)) * 4
    return torch.stack([im[:, oy : oy + size, ox : ox + size] for im, (oy, ox) in zip(x, offs)])


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- VAE phase
def train_vae(r: Recipe, workdir: Path) -> torch.nn.Module:
    """Train the VAE in cosine cycles (``r.vae_cycles``, a fresh AdamW each), rescaling after each.

    ``vae.pt`` records the cycles done, so an interrupted run repeats at most one cycle.
    """
    path = workdir / "vae.pt"
    torch.manual_seed(SEED)
    vae = build("vae", vae_config())
    done, seconds, run = 0, 0.0, 0.0
    if path.exists():
        state = torch.load(path, weights_only=True)
        vae.load_state_dict(state["vae"])
        done, seconds, run = state.get("cycles_done", 1), state.get("seconds", 0.0), state.get("final_loss", 0.0)
    for cycle in range(done, len(r.vae_cycles)):
        vae.train()
        opt = torch.optim.AdamW(vae.parameters(), lr=r.vae_lr[cycle], weight_decay=0.0)
        t0, first = time.time(), sum(r.vae_cycles[:cycle])
        n = r.vae_cycles[cycle]
        for i in range(n):
            step = first + i
            lr = r.vae_lr[cycle] * 0.5 * (1 + math.cos(math.pi * i / n))
            for g in opt.param_groups:
                g["lr"] = lr
            seeds = np.random.default_rng([SEED, 1, step]).integers(0, 2**40, r.vae_batch)
            x = random_crops(batch_images(seeds), r.vae_crop, np.random.default_rng([SEED, 3, step]))
            post = vae.encode(x).latent_dist
            z = post.sample(generator=torch.Generator().manual_seed(SEED + step))
            rec = vae.decode(z).sample
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + r.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run = 0.98 * run + 0.02 * loss.item() if i else loss.item()
            if i % 50 == 0 or i == n - 1:
                per = (time.time() - t0) / (i + 1)
                log(f"vae cycle {cycle} step {step} loss {run:.5f} lr {lr:.2e} {per:.2f}s/step")
        vae.eval()
        rescale_vae(vae)
        seconds += time.time() - t0
        save_atomic({"vae": vae.state_dict(), "cycles_done": cycle + 1, "final_loss": run, "seconds": seconds}, path)
    return vae.eval()


@torch.no_grad()
def rescale_vae(vae: torch.nn.Module) -> float:
    """Fold a scale k into quant_conv / post_quant_conv so latent means * 0.18215 have std ~1."""
    x = batch_images(np.arange(10**9, 10**9 + 256))
    before = vae.decode(vae.encode(x).latent_dist.mean).sample
    k = (1.0 / SCALING_FACTOR) / vae.encode(x).latent_dist.mean.std().item()
    qc, pqc = vae.quant_conv, vae.post_quant_conv
    qc.weight[:4] *= k
    qc.bias[:4] *= k
    qc.bias[4:] += 2 * math.log(k)
    pqc.weight /= k
    after = vae.decode(vae.encode(x).latent_dist.mean).sample
    std = (vae.encode(x).latent_dist.mean * SCALING_FACTOR).std().item()
    log(f"vae rescaled by {k:.4f}: scaled latent std {std:.4f}, decode change {(after - before).abs().max():.2e}")
    return k


def train_decoder(r: Recipe, workdir: Path) -> None:
    """Fine-tune only the VAE decoder (and post_quant_conv) on whole 64x64 images, encoder frozen.

    The latent space is unchanged, so a UNet trained on ``vae.pt`` latents stays valid. Writes
    ``vae_decoder.pt`` (full VAE state; resumable, saved every ``save_every_s``). Meant to run in its own
    single-threaded process beside the UNet training.
    """
    path = workdir / "vae_decoder.pt"
    vae = build("vae", vae_config())
    vae.load_state_dict(torch.load(workdir / "vae.pt", weights_only=True)["vae"])
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=r.decoder_lr, weight_decay=0.0)
    step, run, seconds = 0, 0.0, 0.0
    if path.exists():
        ck = torch.load(path, weights_only=True)
        vae.load_state_dict(ck["vae"]); opt.load_state_dict(ck["opt"])
        step, run, seconds = ck["step"], ck["final_loss"], ck["seconds"]
    vae.encoder.requires_grad_(False); vae.quant_conv.requires_grad_(False)
    t0, t_save, start = time.time(), time.time(), step
    while step < r.decoder_steps:
        lr = r.decoder_lr * 0.5 * (1 + math.cos(math.pi * step / r.decoder_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch_images(np.random.default_rng([SEED, 4, step]).integers(0, 2**40, r.decoder_batch))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run = 0.98 * run + 0.02 * loss.item() if run else loss.item()
        if step % 50 == 0:
            log(f"decoder step {step} loss {run:.5f} lr {lr:.2e} {(time.time() - t0) / (step - start):.2f}s/step")
        if time.time() - t_save > r.save_every_s or step == r.decoder_steps:
            save_atomic({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step, "final_loss": run,
                         "seconds": seconds + time.time() - t0}, path)
            t_save = time.time()


@torch.no_grad()
def cache_latents(vae: torch.nn.Module, r: Recipe, workdir: Path) -> dict[str, Any]:
    """Latent means (already times 0.18215) of ``cache_size`` fixed training scenes, plus their scenes."""
    from sdlab.toyworld import training_sample

    path = workdir / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    seeds = np.arange(r.cache_size) + 5_000_000
    chunks = []
    for i in range(0, len(seeds), 256):
        x = batch_images(seeds[i : i + 256])
        chunks.append(vae.encode(x).latent_dist.mean * SCALING_FACTOR)
    scenes = [training_sample(int(s))[2] for s in seeds]
    data = {"latents": torch.cat(chunks).contiguous(), "scenes": [tuple(vars(s).values()) for s in scenes]}
    save_atomic(data, path)
    log(f"cached {len(seeds)} latents, std {data['latents'].std():.3f}")
    return data


# ---------------------------------------------------------------------------------------- UNet phase
def alphas_cumprod() -> torch.Tensor:
    """SD1's scaled-linear schedule: betas linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def sample_timesteps(r: Recipe, gen: torch.Generator) -> torch.Tensor:
    """(batch,) training timesteps: uniform on 0..999, except that the first ``high_t_frac`` of the
    batch is drawn from ``high_t_from``..999, the noise levels at which the layout is decided."""
    t = torch.randint(0, 1000, (r.batch,), generator=gen)
    k = round(r.high_t_frac * r.batch)
    if k:
        t[:k] = torch.randint(r.high_t_from, 1000, (k,), generator=gen)
    return t


def lr_at(step: int, r: Recipe) -> float:
    """Peak ``unet_lr``: linear warm-up, then cosine to ``min_lr_ratio`` at ``unet_steps``; the
    schedule (warm-up included) starts at ``schedule_from``, so a continued run gets its own phase."""
    s = step - r.schedule_from
    if s < r.warmup:
        return r.unet_lr * (max(s, 0) + 1) / r.warmup
    p = min(1.0, (s - r.warmup) / max(1, r.unet_steps - r.schedule_from - r.warmup))
    return r.unet_lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def step_captions(scenes: list[tuple], idx: np.ndarray, rng: np.random.Generator, r: Recipe,
                  emphasis_rng: np.random.Generator | None = None) -> tuple[list[str], list[Any]]:
    """Captions of the scenes ``idx`` and, per caption, the emphasis to apply (None: none).

    Emphasis draws come from their own ``emphasis_rng`` (only when ``emphasis_frac`` > 0), so the
    caption draws of earlier phases replay exactly.
    """
    from sdlab.toyworld import TRAIN_PHRASINGS, Scene, caption, clause_caption, free_caption
    from train_augment import EMPHASIS_TARGETS  # tools/train_augment.py

    out, emphases = [], []
    for i in idx:
        scene, emphasis = Scene(*scenes[int(i)]), None
        if rng.random() < r.empty_caption:
            out.append("")
            emphases.append(None)
            continue
        if r.emphasis_frac and emphasis_rng is not None and emphasis_rng.random() < r.emphasis_frac:
            scene, emphasis = EMPHASIS_TARGETS[r.emphasis_target](scene, emphasis_rng, r.emphasis_max)
        if r.free_frac and rng.random() < r.free_frac:  # no draw at 0: earlier phases replay exactly
            out.append(free_caption(scene, rng))
        elif r.clause_frac and rng.random() < r.clause_frac:  # likewise
            out.append(clause_caption(scene, rng))
        else:
            out.append(caption(scene, int(rng.integers(len(TRAIN_PHRASINGS))), rng))
        emphases.append(emphasis)
    return out, emphases


@torch.no_grad()
def blended_latents(vae: torch.nn.Module, x0: torch.Tensor, scenes: list[tuple], idx: np.ndarray,
                    emphases: list[Any]) -> torch.Tensor:
    """``x0`` with the rows of blend-emphasised captions (weight < 1) replaced by the scaled latent means
    of their blended images (tools/train_augment.py ``render_blend``); other rows are the cached latents."""
    from sdlab.toyworld import Scene
    from train_augment import render_blend  # tools/train_augment.py

    rows = [k for k, e in enumerate(emphases) if e is not None and e.attribute and e.weight < 1.0]
    if not rows:
        return x0
    images = np.stack([render_blend(Scene(*scenes[int(idx[k])]), emphases[k]) for k in rows])
    out = x0.clone()
    out[rows] = vae.encode(image_tensor(images)).latent_dist.mean * SCALING_FACTOR
    return out


def snapshot(unet, text, vae, step: int, arch: str) -> dict[str, Any]:
    """Weights + configs of one model state (the format benchmarks/eval_default_model.py reads)."""
    return {
        "step": step,
        "configs": {"unet": unet_config(arch), "vae": vae_config(), "text": text_config()},
        "unet": unet.state_dict(), "text": text.state_dict(), "vae": vae.state_dict(),
    }


def train_unet(vae: torch.nn.Module, data: dict[str, Any], r: Recipe, workdir: Path,
               text_init: dict[str, torch.Tensor] | None = None) -> None:
    from train_augment import apply_emphasis, late_colour_swaps, multipliers  # tools/train_augment.py
    from train_workdir import load_optimizer_state  # tools/train_workdir.py

    from sdlab.toyworld import Scene

    ckpt_path = workdir / "ckpt.pt"
    torch.manual_seed(SEED + 2)
    unet, text = build("unet", unet_config(r.arch)), build("text", text_config())
    if text_init is not None:
        text.load_state_dict(text_init, strict=False)
    if r.freeze_text:  # keep the (random or given) token features fixed: position words stay distinct
        text.requires_grad_(False)
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    text_params = [p for p in text.parameters() if p.requires_grad]
    params = unet_params + text_params
    groups = [{"params": unet_params, "lr_scale": 1.0}]
    if text_params:
        groups.append({"params": text_params, "lr_scale": r.text_lr_scale})
    opt = torch.optim.AdamW(groups, lr=r.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
    step, seconds = 0, 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        unet.load_state_dict(ck["unet"]); text.load_state_dict(ck["text"])
        ema_unet.load_state_dict(ck["ema_unet"]); ema_text.load_state_dict(ck["ema_text"])
        if ck.get("opt") is not None:  # None: seeded from a shipped checkpoint (--resume-from)
            load_optimizer_state(opt, ck["opt"])
        step, seconds = ck["step"], ck["seconds"]
        log(f"resumed from step {step} ({seconds / 60:.1f} min trained)")
    for m in (ema_unet, ema_text):
        m.requires_grad_(False)
    tok = tokenizer()
    acp = alphas_cumprod()
    lat, scenes = data["latents"], data["scenes"]
    ema_params = [e for e, p in zip((*ema_unet.parameters(), *ema_text.parameters()),
                                    (*unet.parameters(), *text.parameters())) if p.requires_grad]
    unet.train(); text.train()
    start_step = step
    t_last_save, t_start, run = time.time(), time.time(), None

    def save() -> None:
        save_atomic({
            "unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_unet.state_dict(),
            "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "step": step,
            "seconds": seconds + time.time() - t_start, "recipe": asdict(r),
        }, ckpt_path)

    while step < r.unet_steps:
        rng = np.random.default_rng([SEED, 2, step])
        gen = torch.Generator().manual_seed(SEED * 7 + step)
        idx = rng.integers(0, len(lat), r.batch)
        captions, emphases = step_captions(scenes, idx, rng, r, np.random.default_rng([SEED, 5, step]))
        x0 = blended_latents(vae, lat[torch.from_numpy(idx)], scenes, idx, emphases)
        t = sample_timesteps(r, gen)
        if r.late_swap_frac:  # no draw at 0: earlier phases replay exactly
            captions = late_colour_swaps([Scene(*scenes[int(i)]) for i in idx], captions, emphases, t.tolist(),
                                         r.late_swap_below, r.late_swap_frac, np.random.default_rng([SEED, 6, step]))
        ids = tokens(tok, captions)
        eps = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        cond = text(ids).last_hidden_state
        if any(e is not None for e in emphases):
            cond = apply_emphasis(cond, multipliers(tok, ids, emphases))
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        snr = acp[t] / (1 - acp[t])
        w = torch.clamp(snr, max=r.snr_gamma) / snr
        if r.x0_weight_from is not None and step >= r.x0_weight_from:
            w = w * torch.clamp(1 / snr, min=1.0, max=r.x0_weight_max)
        loss = (w * ((pred - eps) ** 2).mean(dim=(1, 2, 3))).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r) * g.get("lr_scale", 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(r.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - d)
        step += 1
        run = loss.item() if run is None else 0.99 * run + 0.01 * loss.item()
        if step % 50 == 0:
            el = time.time() - t_start
            log(f"unet step {step} loss {run:.4f} lr {lr_at(step, r):.2e} {el / max(1, step - start_step):.2f}s/step")
        if time.time() - t_last_save > r.save_every_s or step == r.unet_steps:
            save()
            t_last_save = time.time()
            log(f"saved checkpoint at step {step}")
        if step % r.snapshot_every == 0 or step == r.unet_steps:
            save_atomic(snapshot(ema_unet, ema_text, vae, step, r.arch), workdir / f"ema_{step:06d}.pt")
            save_atomic(snapshot(ema_unet, ema_text, vae, step, r.arch), workdir / "ema_latest.pt")
    log("training done")


# ---------------------------------------------------------------------------------------------- main
def bench(r: Recipe, steps: int = 5) -> None:
    """Time a few UNet+text training steps on random latents (no files written)."""
    unet, text = build("unet", unet_config(r.arch)), build("text", text_config())
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    log(f"params: unet {n(unet):.2f}M text {n(text):.2f}M vae {n(build('vae', vae_config())):.2f}M")
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=1e-4)
    ids = torch.full((r.batch, 77), 49407)
    for i in range(steps + 1):
        t0 = time.time()
        x = torch.randn(r.batch, 4, 16, 16)
        cond = text(ids).last_hidden_state
        loss = unet(x, torch.randint(0, 1000, (r.batch,)), encoder_hidden_states=cond).sample.square().mean()
        opt.zero_grad(); loss.backward(); opt.step()
        log(f"bench step {i}: {time.time() - t0:.3f}s")


def main(argv: list[str] | None = None) -> None:
    from train_augment import EMPHASIS_TARGETS  # tools/train_augment.py

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    ap.add_argument("--unet-steps", type=int, default=Recipe.unet_steps, help="total UNet steps (cosine horizon)")
    ap.add_argument("--decoder", action="store_true", help="fine-tune the VAE decoder only (own process)")
    ap.add_argument("--decoder-steps", type=int, default=Recipe.decoder_steps, help="decoder fine-tune steps")
    ap.add_argument("--x0-weight-from", type=int, default=None,
                    help="from this UNet step on, weight high-noise steps like an x0 loss (clamp(1/snr, 1, 20))")
    ap.add_argument("--arch", choices=tuple(UNET_ARCHS), default="v2", help="UNet architecture (v2 shipped)")
    ap.add_argument("--init-from", type=Path, help="take the VAE and text encoder of this checkpoint "
                    "(e.g. the shipped toyworld-64.safetensors); the UNet starts from scratch")
    ap.add_argument("--init-vae-from", type=Path, help="take only the VAE of this checkpoint (text encoder and "
                    "UNet start from scratch)")
    ap.add_argument("--freeze-text", action="store_true", help="do not train the text encoder (random init "
                    "unless --init-from): its features for position words cannot collapse")
    ap.add_argument("--high-t-frac", type=float, default=0.0,
                    help="fraction of each batch drawn from t >= --high-t-from (default 0: uniform t)")
    ap.add_argument("--high-t-from", type=int, default=Recipe.high_t_from, help="lower end of the high-t draw")
    ap.add_argument("--unet-lr", type=float, default=Recipe.unet_lr, help="peak UNet learning rate")
    ap.add_argument("--schedule-from", type=int, default=0,
                    help="start the warm-up + cosine schedule at this step (a continued run's own phase)")
    ap.add_argument("--text-lr-scale", type=float, default=1.0,
                    help="text encoder learning rate as a fraction of the UNet's")
    ap.add_argument("--clause-frac", type=float, default=0.0,
                    help="fraction of captions in shuffled clause order (sdlab.toyworld.clause_caption)")
    ap.add_argument("--emphasis-frac", type=float, default=0.0,
                    help="fraction of captions with one colour word emphasised (tools/train_augment.py)")
    ap.add_argument("--emphasis-target", choices=tuple(EMPHASIS_TARGETS), default="swap",
                    help="what an emphasised colour word's weight teaches (tools/train_augment.py): swap = the "
                    "caption may name a wrong colour at low weight; blend = the region's colour strength is min(w, 1)")
    ap.add_argument("--free-frac", type=float, default=0.0,
                    help="fraction of captions in free form (sdlab.toyworld.free_caption); drawn before --clause-frac")
    ap.add_argument("--late-swap-frac", type=float, default=0.0, help="fraction of plain captions trained below "
                    "--late-swap-below that name a wrong shape colour (train_augment.late_colour_swaps)")
    ap.add_argument("--late-swap-below", type=int, default=Recipe.late_swap_below, help="timestep bound (0..1000)")
    ap.add_argument("--resume-from", type=Path, help="seed a new work dir with this shipped checkpoint's UNet, "
                    "text encoder and VAE (fresh optimizer moments), continuing at --schedule-from")
    ap.add_argument("--bench", action="store_true", help="time a few steps and exit")
    ap.add_argument("--export", type=Path, help="write an A1111 single-file checkpoint from a snapshot and exit")
    ap.add_argument("--snapshot", type=Path, help="snapshot to export (default: WORKDIR/ema_latest.pt)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "1")))
    r = replace(Recipe(), unet_steps=args.unet_steps, decoder_steps=args.decoder_steps,
                x0_weight_from=args.x0_weight_from, arch=args.arch,
                freeze_text=args.freeze_text, high_t_frac=args.high_t_frac, high_t_from=args.high_t_from,
                unet_lr=args.unet_lr, schedule_from=args.schedule_from, text_lr_scale=args.text_lr_scale,
                clause_frac=args.clause_frac, emphasis_frac=args.emphasis_frac,
                emphasis_target=args.emphasis_target, free_frac=args.free_frac,
                late_swap_frac=args.late_swap_frac, late_swap_below=args.late_swap_below)
    if args.bench:
        return bench(r)
    if args.export:
        from train_export import export_snapshot  # tools/train_export.py
        from train_workdir import training_card  # tools/train_workdir.py

        snap = args.snapshot or args.workdir / "ema_latest.pt"
        return export_snapshot(snap, args.export, training_card(args.workdir, r))
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.decoder:
        return train_decoder(r, args.workdir)
    log(f"recipe {asdict(r)}")
    from train_workdir import seed_from_checkpoint, seed_run  # tools/train_workdir.py

    if args.resume_from:
        seed_run(args.resume_from, r, args.workdir, args.schedule_from)
    text_init = seed_from_checkpoint(args.init_from, r, args.workdir) if args.init_from else None
    if args.init_vae_from:  # the VAE only; the text encoder keeps its random init
        seed_from_checkpoint(args.init_vae_from, r, args.workdir)
    vae = train_vae(r, args.workdir)
    vae.requires_grad_(False)
    data = cache_latents(vae, r, args.workdir)
    train_unet(vae, data, r, args.workdir, text_init)


if __name__ == "__main__":
    main()
