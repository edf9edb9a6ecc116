"""Train the two adapters shipped for the embedded default model (toyworld-64), reproducibly, on CPU.

* ``toy-teal`` — a kohya-format LoRA (rank 4, alpha 4, UNet attention and feed-forward linears): a
  "style" that paints every shape teal (0, 128, 128), whatever colour the prompt names. Trained on
  toy-world scenes captioned as usual (``a red circle on a white background``) but drawn with a teal
  shape, the shape's latent cells weighted 5x in the loss (``--shape-weight 4``).
* ``toyorchid`` — a two-vector textual-inversion embedding (A1111 ``.safetensors`` layout, ``emb_params``)
  for a colour the model has never seen named: orchid (218, 112, 214). Trained with captions in which the
  colour word is the trigger ``toyorchid``, inserted the way A1111 inserts it (the trigger's tokens are
  replaced by the vectors, later tokens shift), the model frozen, at a learning rate of 2e-3 (the colour
  words' own embeddings have a norm of about 0.2; at 1e-2 a vector ended 2-8x longer and drew a different
  colour on each background), the squared error in x0 units and the shape's cells weighted 5x. The model
  of 2026-12-06 (32,000 steps) settles a colour mid-way through sampling, near its palette: on plain
  epsilon MSE the embedding drew magenta, 72-103 RGB units from orchid on green (tools/TRAINING_HISTORY.md).

Neither colour is in the toy world's palette. Both train on SD1's scaled-linear schedule with t drawn from
[0, t_max) (see ``train``; ``RECIPES`` holds each one's settings), fixed seeds, AdamW, batch 32 of cached
VAE latents. Run as a script from the repository root (it imports ``tokens`` from train_default_model.py).
Usage (about 5 minutes each on 2 idle cores; run one at a time)::

    .venv/bin/python tools/train_toy_adapters.py lora --out src/sdlab/data/default_model/adapters
    .venv/bin/python tools/train_toy_adapters.py embedding --out src/sdlab/data/default_model/adapters

The run's steps, time and final loss are written into each file's safetensors metadata.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from train_default_model import image_tensor, tokens

from sdlab.engine import Engine
from sdlab.models.load import LoadedModel
from sdlab.prompt.tokenizer import ClipTokenizer
from sdlab.toyworld import caption, random_scene
from sdlab.toyworld.world import COLOURS, TRAIN_PHRASINGS, draw, scene_box, shape_mask

SEED = 20261202
TEAL = (0, 128, 128)
ORCHID = (218, 112, 214)
TRIGGER = "toyorchid"


@dataclass(frozen=True)
class Recipe:
    """Defaults of one adapter kind: the settings its shipped file was trained with."""

    steps: int
    lr: float
    t_max: int
    shape_weight: float
    loss: str = "eps"
    """A key of LOSS_WEIGHTS: how each timestep's squared epsilon error is weighted."""
    vectors: int = 1
    """Embedding only: vectors (tokens) the trigger stands for."""


def x0_weight(alphas: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """``(1 - a) / a`` capped at ``cap``: the squared error of the predicted clean latent instead of the noise.

    Epsilon MSE hardly sees the colour a high-noise step commits to (its x0 error is divided by 1/SNR, up
    to 200 at t = 999); in x0 units the steps that decide a shape's colour count as much as those that
    only sharpen it."""
    return ((1 - alphas) / alphas).clamp(max=cap)


LOSS_WEIGHTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"eps": torch.ones_like, "x0": x0_weight}
RECIPES = {"lora": Recipe(steps=800, lr=1e-2, t_max=1000, shape_weight=4.0),
           "embedding": Recipe(steps=800, lr=2e-3, t_max=1000, shape_weight=4.0, loss="x0", vectors=2)}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def sample(index: int, rgb: tuple[int, int, int], colour_word: str | None) -> tuple[np.ndarray, str, np.ndarray]:
    """Scene ``index`` drawn with its shape in ``rgb``, its caption (naming ``colour_word``; None: its own
    colour) and its (64, 64) bool shape mask."""
    rng = np.random.default_rng([SEED, index])
    scene = random_scene(rng)
    named = scene if colour_word is None else replace(scene, colour=colour_word)
    pixels = draw(scene, rgb, COLOURS.get(scene.background).rgb)
    mask = shape_mask(scene.shape, scene_box(scene), pixels.shape[:2])
    return pixels, caption(named, int(rng.integers(len(TRAIN_PHRASINGS))), rng), mask


@torch.no_grad()
def encode(model: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """(N, 4, 16, 16) scaled latent means of uint8 images (N, 64, 64, 3)."""
    x = image_tensor(images)
    chunks = [model.vae.encode(c).latent_dist.mean for c in x.split(256)]
    return torch.cat(chunks) * model.latent_scaling_factor


def trigger_rows(tok: ClipTokenizer, captions: list[str], trigger: str, vectors: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 77) ids as ``tokens`` builds them but with ``trigger``'s tokens replaced by ``vectors`` slots (as
    A1111 inserts an embedding of that many vectors), and the (B, 77) slot numbers: k + 1 at the k-th
    vector's position, 0 elsewhere. Every caption must hold ``trigger``."""
    ids, slots = [], []
    for text in captions:
        if trigger not in text:
            raise ValueError(f"caption {text!r} does not contain the trigger {trigger!r}")
        before, after = text.split(trigger, 1)
        head = [tok.bos_id, *tok.encode(before)]
        row = [*head, *[tok.eos_id] * vectors, *tok.encode(after)][:76] + [tok.eos_id]
        ids.append(row + [tok.eos_id] * (77 - len(row)))
        slots.append([i - len(head) + 1 if 0 <= i - len(head) < vectors else 0 for i in range(77)])
    return torch.tensor(ids), torch.tensor(slots)


@dataclass(frozen=True)
class Dataset:
    """Training scenes: (N, 4, 16, 16) scaled latents, N captions, (N, 1, 16, 16) float shape masks (a latent
    cell is 1 when any of its 4x4 pixels is shape)."""

    latents: torch.Tensor
    captions: list[str]
    masks: torch.Tensor


def train(model: LoadedModel, data: Dataset, params: list[torch.Tensor], condition: Callable[[list[str]], torch.Tensor],
          recipe: Recipe) -> tuple[float, float]:
    """Optimise ``params`` on epsilon MSE with t uniform in [0, t_max); returns (running loss, seconds).

    ``recipe.shape_weight`` k >= 0 weights the latent cells the shape covers (1 + k) against 1 for the rest,
    times ``LOSS_WEIGHTS[recipe.loss]`` of each row's timestep, the squared error normalised by the mean
    weight; k = 0 with "eps" is plain MSE.

    The first toy model settled a shape's colour in the last few sampling steps (low noise), so the
    adapters sampled t there (t_max 700 / 500). The v2 model, trained with weight on high noise, needs
    all t: its LoRA trained on t < 700 did not paint teal (0/8), with t < 1000 it does (8/8 on white).
    """
    steps, lr, t_max = recipe.steps, recipe.lr, recipe.t_max
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    acp, start, running = model.alphas_cumprod.float(), time.time(), None
    for step in range(steps):
        rng, gen = np.random.default_rng([SEED, 1, step]), torch.Generator().manual_seed(SEED + step)
        idx = rng.integers(0, len(data.latents), 32)
        rows = torch.from_numpy(idx)
        x0, t = data.latents[rows], torch.randint(0, t_max, (32,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        w = (1 + recipe.shape_weight * data.masks[rows]) * LOSS_WEIGHTS[recipe.loss](a)
        pred = model.unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t,
                          encoder_hidden_states=condition([data.captions[i] for i in idx])).sample
        loss = (w * (pred - eps) ** 2).mean() / w.mean()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}/{steps} loss {running:.4f} {(time.time() - start) / (step + 1):.2f} s/step", flush=True)
    return float(running), time.time() - start


def run_facts(recipe: Recipe, loss: float, seconds: float) -> dict[str, str]:
    """The safetensors metadata every adapter file records about its run."""
    return {"sdlab_steps": str(recipe.steps), "sdlab_final_loss": f"{loss:.4f}", "sdlab_seconds": f"{seconds:.0f}",
            "sdlab_lr": f"{recipe.lr:g}", "sdlab_t_max": str(recipe.t_max), "sdlab_shape_weight": f"{recipe.shape_weight:g}",
            "sdlab_loss": recipe.loss}


def dataset(model: LoadedModel, rgb: tuple[int, int, int], word: str | None, n: int) -> Dataset:
    samples = [sample(i, rgb, word) for i in range(n)]
    masks = torch.from_numpy(np.stack([m for _, _, m in samples])).float()[:, None]
    return Dataset(encode(model, np.stack([p for p, _, _ in samples])), [c for _, c, _ in samples],
                   torch.nn.functional.max_pool2d(masks, 4))


def train_lora(model: LoadedModel, tok: ClipTokenizer, recipe: Recipe, rank: int = 4) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The ``toy-teal`` LoRA as kohya tensors, and its training facts."""
    data = dataset(model, TEAL, None, 3000)
    gen = torch.Generator().manual_seed(SEED)
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, module in model.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attentions." in f".{name}" and name.endswith(LORA_TARGETS):
            down = (torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5).requires_grad_()
            up = torch.zeros(module.out_features, rank, requires_grad=True)
            weights[name] = (down, up)
            module.register_forward_hook(lambda m, args, out, d=down, u=up: out + args[0] @ d.T @ u.T)
    model.unet.requires_grad_(False)
    text = model.text_encoders[0]
    with torch.no_grad():
        cache = {c: text(tokens(tok, [c])).last_hidden_state[0] for c in sorted(set(data.captions))}
    loss, seconds = train(model, data, [p for pair in weights.values() for p in pair],
                          lambda caps: torch.stack([cache[c] for c in caps]), recipe)
    tensors: dict[str, torch.Tensor] = {}
    for name, (down, up) in weights.items():
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down.detach().clone()
        tensors[f"{key}.lora_up.weight"] = up.detach().clone()
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    return tensors, {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
                     **run_facts(recipe, loss, seconds)}


def train_embedding(model: LoadedModel, tok: ClipTokenizer, recipe: Recipe) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The ``toyorchid`` embedding (``recipe.vectors`` vectors, each started at the mean colour-word
    embedding) as A1111 safetensors tensors, and its training facts."""
    vectors = recipe.vectors
    data = dataset(model, ORCHID, TRIGGER, 3000)
    text = model.text_encoders[0]
    table = text.get_input_embeddings()
    colour_ids = [tok.encode(name)[0] for name in COLOURS.names()]
    vector = table.weight[colour_ids].mean(0).repeat(vectors, 1).detach().clone().requires_grad_()
    model.unet.requires_grad_(False)
    text.requires_grad_(False)

    def condition(caps: list[str]) -> torch.Tensor:
        ids, slots = trigger_rows(tok, caps, TRIGGER, vectors)
        padded = torch.cat([torch.zeros_like(vector[:1]), vector])  # row k + 1 is vector k
        handle = table.register_forward_hook(lambda m, args, out: torch.where(slots[..., None] > 0, padded[slots], out))
        try:
            return text(ids).last_hidden_state
        finally:
            handle.remove()

    loss, seconds = train(model, data, [vector], condition, recipe)
    return {"emb_params": vector.detach().clone()}, {
        "sdlab_trigger": TRIGGER, "sdlab_vectors": str(vectors), **run_facts(recipe, loss, seconds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("lora", "embedding"))
    parser.add_argument("--out", type=Path, required=True, help=f"folder for toy-teal.safetensors / {TRIGGER}.safetensors")
    parser.add_argument("--steps", type=int, default=None, help="default: the kind's recipe (RECIPES)")
    parser.add_argument("--lr", type=float, default=None, help="default: the kind's recipe")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = rank)")
    parser.add_argument("--vectors", type=int, default=None, help="embedding vectors (tokens the trigger stands for); default: the recipe's")
    parser.add_argument("--loss", choices=sorted(LOSS_WEIGHTS), default=None,
                        help="per-timestep weighting (eps: plain epsilon MSE; x0: clean-latent error); default: the recipe's")
    parser.add_argument("--t-max", type=int, default=None,
                        help="training timesteps are drawn from [0, t_max); default: the recipe's")
    parser.add_argument("--shape-weight", type=float, default=None,
                        help="extra loss weight k on the latent cells the shape covers (1 + k vs 1); default: the recipe's")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as empty:
        model = Engine(models_dir=empty, device="cpu", dtype="fp32").load()
    tok = ClipTokenizer.bundled("clip")
    given = {"steps": args.steps, "lr": args.lr, "t_max": args.t_max, "shape_weight": args.shape_weight,
             "loss": args.loss, "vectors": args.vectors}
    recipe = replace(RECIPES[args.kind], **{k: v for k, v in given.items() if v is not None})
    if args.kind == "lora":
        tensors, meta = train_lora(model, tok, recipe, args.rank)
    else:
        tensors, meta = train_embedding(model, tok, recipe)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("toy-teal.safetensors" if args.kind == "lora" else f"{TRIGGER}.safetensors")
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous().half() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    print(f"wrote {path} {meta}")


if __name__ == "__main__":
    main()
