"""Benchmark: apply / undo a rank-128 kohya LoRA on a full-size SD1.5 UNet + CLIP-L (random weights).

    .venv/bin/python benchmarks/bench_lora.py [--rank 128] [--repeats 3] [--out /tmp/bench_lora_r128.safetensors]
        [--only sdlab|diffusers]

The first apply in a process is the slowest: its new weight tensors land in memory the process has
never touched (page faults); later ones reuse freed memory. ``--only`` measures each side cold.

Builds the models from sdlab's bundled configs (nothing downloaded), writes a kohya-layout LoRA
(fp16, every attention/feed-forward/projection layer of the UNet and the text encoder) and times:
reading the file, applying it (``applied_networks`` entry) and undoing it (exit), and checks the undo
is bit-exact. When ``peft`` is installed it also times diffusers' ``load_lora_weights`` + ``fuse_lora``
and ``unfuse_lora`` + ``unload_lora_weights`` on the same file. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdlab.models.adapters.apply import NetworkSpec, applied_networks
from sdlab.models.adapters.lora_file import read_network
from sdlab.models.derive import load_template

UNET_TARGETS = ("proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def build_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Full-size SD1.5 UNet and CLIP-L with N(0, 0.02) weights."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    te_cfg = {k: v for k, v in load_template("sd1", "text_encoder").items() if k != "architectures"}
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(load_template("sd1", "unet"))
        te = CLIPTextModel(CLIPTextConfig.from_dict(te_cfg))
    gen = torch.Generator().manual_seed(0)
    for model in (unet, te):
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02, generator=gen)
            for b in model.buffers():
                b.zero_()
    return unet.eval(), te.eval()


def _targets(model: torch.nn.Module, suffixes: tuple[str, ...], under: str = "") -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n.endswith(suffixes) and under in n
            and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]  # fmt: skip


def write_lora(path: Path, unet: torch.nn.Module, te: torch.nn.Module, rank: int) -> Path:
    """A kohya-layout LoRA (lora_unet_* / lora_te_*) of ``rank`` on every targeted layer, fp16."""
    gen = torch.Generator().manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    modules = [("lora_unet_", n, m) for n, m in _targets(unet, UNET_TARGETS, "attentions")]
    modules += [("lora_te_text_model_", n, m) for n, m in _targets(te, TE_TARGETS)]
    for prefix, name, module in modules:
        key = prefix + name.replace("text_model.", "").replace(".", "_")
        out_f, in_f = module.weight.shape[:2]
        tail = (1, 1) if module.weight.dim() == 4 else ()
        state[f"{key}.lora_down.weight"] = (torch.randn(rank, in_f, *tail, generator=gen) * 0.01).half()
        state[f"{key}.lora_up.weight"] = (torch.randn(out_f, rank, *tail, generator=gen) * 0.01).half()
        state[f"{key}.alpha"] = torch.tensor(float(rank) / 2).half()
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return path


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_sdlab(path: Path, unet: torch.nn.Module, te: torch.nn.Module, repeats: int) -> None:
    components = {"unet": unet, "text_encoder": te}
    originals = {n: p.data for c in components.values() for n, p in c.named_parameters()}
    checksum = {n: t.clone() for n, t in list(originals.items())[:50]}
    load = _timed(lambda: read_network(path))
    net = read_network(path)
    print(f"sdlab read_network: {load:.2f} s ({len(net.modules)} modules)")
    for i in range(repeats):
        ctx = applied_networks(components, [NetworkSpec(net, 0.8)], family="sd1")
        t_apply = _timed(ctx.__enter__)
        t_undo = _timed(lambda: ctx.__exit__(None, None, None))
        exact = all(p.data_ptr() == originals[n].data_ptr() for c in components.values() for n, p in c.named_parameters())
        exact = exact and all(torch.equal(originals[n], v) for n, v in checksum.items())
        print(f"sdlab run {i}: apply {t_apply:.2f} s, undo {t_undo:.3f} s, bit-exact restore: {exact}")


def bench_fuse_arithmetic(path: Path, unet: torch.nn.Module, te: torch.nn.Module) -> None:
    """Reference floor: the arithmetic of diffusers' fuse_lora alone (per layer W += scale * up @ down, with
    a backup copy of W for unfuse), without load_lora_weights' key conversion and PEFT layer injection."""
    net = read_network(path)
    comps = {"unet": unet, "text_encoder": te}
    from sdlab.models.adapters.apply import resolve_all

    (resolved,) = resolve_all(comps, [NetworkSpec(net, 0.8)])
    layers = [(comps[t.component].get_submodule(t.real_path), m) for t, m in resolved.entries]
    backups: list[torch.Tensor] = []

    def fuse() -> None:
        with torch.no_grad():
            for layer, m in layers:
                up, down = m.parts["lora_up.weight"], m.parts["lora_down.weight"]
                backups.append(layer.weight.data.clone())
                w = layer.weight.data.reshape(layer.weight.shape[0], -1)
                w += 0.8 * float(m.parts["alpha"]) / down.shape[0] * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1))

    def unfuse() -> None:
        with torch.no_grad():
            for (layer, _), b in zip(layers, backups):
                layer.weight.data.copy_(b)
        backups.clear()

    print(f"reference fuse arithmetic (diffusers-style, in place + backup copy): fuse {_timed(fuse):.2f} s, "
          f"unfuse {_timed(unfuse):.2f} s")


def bench_diffusers(path: Path, unet: torch.nn.Module, te: torch.nn.Module, repeats: int) -> None:
    if importlib.util.find_spec("peft") is None:
        print("diffusers load_lora_weights + fuse_lora: skipped (needs the 'peft' package, not installed)")
        return
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from sdlab.prompt.tokenizer import ClipTokenizer  # noqa: F401 - bundled vocab lives next to it

    data = Path(__import__("sdlab").__file__).parent / "data" / "clip_bpe"
    tok = CLIPTokenizer(str(data / "vocab.json"), str(data / "merges.txt"))
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    for i in range(repeats):
        t_load = _timed(lambda: pipe.load_lora_weights(str(path), adapter_name=f"bench{i}"))
        t_fuse = _timed(lambda: pipe.fuse_lora(lora_scale=0.8))
        t_unfuse = _timed(pipe.unfuse_lora)
        t_unload = _timed(pipe.unload_lora_weights)
        print(f"diffusers run {i}: load {t_load:.2f} s + fuse {t_fuse:.2f} s = {t_load + t_fuse:.2f} s; "
              f"unfuse {t_unfuse:.2f} s + unload {t_unload:.2f} s = {t_unfuse + t_unload:.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_lora_r128.safetensors"))
    parser.add_argument("--only", choices=("all", "sdlab", "diffusers"), default="all",
                        help="run one side alone, so that its first (cold) run is measured in a fresh process")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t = time.perf_counter()
    unet, te = build_models()
    print(f"built SD1.5 UNet + CLIP-L in {time.perf_counter() - t:.1f} s, torch threads {torch.get_num_threads()}")
    path = write_lora(args.out, unet, te, args.rank)
    print(f"LoRA file {path}: {path.stat().st_size / 1e6:.1f} MB, rank {args.rank}")
    if args.only in ("all", "sdlab"):
        bench_sdlab(path, unet, te, args.repeats)
    if args.only == "all":
        bench_fuse_arithmetic(path, unet, te)
    if args.only in ("all", "diffusers"):
        bench_diffusers(path, unet, te, args.repeats)


if __name__ == "__main__":
    main()
