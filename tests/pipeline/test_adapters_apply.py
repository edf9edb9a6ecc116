"""Applying LoRAs to tiny diffusers models: outputs equal an independently merged model, weights come
back bit for bit, bad files change nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers.tiny_checkpoints import tiny_text_encoders, tiny_unet
from safetensors.torch import save_file

from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.apply import NetworkSpec, applied_networks
from sdlab.models.adapters.lora_file import read_network

TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV1 = "down_blocks.0.resnets.0.conv1"
TE_Q = "encoder.layers.0.self_attn.q_proj"  # transformers 5 CLIPTextModel has no text_model. level


@pytest.fixture(scope="module")
def sd1() -> dict[str, torch.nn.Module]:
    gen = torch.Generator().manual_seed(0)
    return {"unet": tiny_unet("sd1", "standard", gen), "text_encoder": tiny_text_encoders("sd1", gen)[0]}


def _te_path(te: torch.nn.Module, path: str) -> str:
    return f"text_model.{path}" if hasattr(te, "text_model") else path


def _snapshot(components: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v.clone() for c, m in components.items() for k, v in m.state_dict().items()}


def _assert_same(components: dict[str, torch.nn.Module], snap: dict[str, torch.Tensor]) -> None:
    now = {f"{c}.{k}": v for c, m in components.items() for k, v in m.state_dict().items()}
    assert now.keys() == snap.keys()
    changed = [k for k in snap if not torch.equal(now[k], snap[k])]
    assert not changed, f"weights not restored bit for bit: {changed[:5]}"


def _lora(gen: torch.Generator, out_f: int, in_f: int, rank: int, kernel: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    if kernel:
        return torch.randn(out_f, rank, 1, 1, generator=gen) * 0.1, torch.randn(rank, in_f, kernel, kernel, generator=gen) * 0.1
    return torch.randn(out_f, rank, generator=gen) * 0.1, torch.randn(rank, in_f, generator=gen) * 0.1


def _write(path: Path, modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> Path:
    state = {}
    for name, (up, down, alpha) in modules.items():
        state[f"{name}.lora_up.weight"], state[f"{name}.lora_down.weight"] = up.contiguous(), down.contiguous()
        state[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory, sd1: dict[str, torch.nn.Module]) -> tuple[Path, dict]:
    gen = torch.Generator().manual_seed(7)
    unet, te = sd1["unet"], sd1["text_encoder"]
    q = unet.get_submodule(TO_Q).weight
    c = unet.get_submodule(CONV1).weight
    t = te.get_submodule(TE_Q).weight
    modules = {
        "lora_unet_" + TO_Q.replace(".", "_"): (*_lora(gen, q.shape[0], q.shape[1], 4), 2.0),
        "lora_unet_" + CONV1.replace(".", "_"): (*_lora(gen, c.shape[0], c.shape[1], 2, kernel=3), 1.0),
        "lora_te_text_model_" + TE_Q.replace(".", "_"): (*_lora(gen, t.shape[0], t.shape[1], 4), 4.0),
    }
    return _write(tmp_path_factory.mktemp("lora") / "style.safetensors", modules), modules


def _merged_copy(sd1: dict, modules: dict, te_m: float, unet_m: float, times: int = 1) -> dict:
    """Independent merge: W + m * alpha / rank * up @ down (conv: flattened product reshaped)."""
    merged = copy.deepcopy(sd1)
    paths = {"lora_unet_" + TO_Q.replace(".", "_"): ("unet", TO_Q), "lora_unet_" + CONV1.replace(".", "_"): ("unet", CONV1),
             "lora_te_text_model_" + TE_Q.replace(".", "_"): ("text_encoder", TE_Q)}  # fmt: skip
    with torch.no_grad():
        for name, (up, down, alpha) in modules.items():
            comp, path = paths[name]
            w = merged[comp].get_submodule(path).weight
            m = te_m if comp == "text_encoder" else unet_m
            delta = (up.reshape(up.shape[0], -1).double() @ down.reshape(down.shape[0], -1).double()).reshape(w.shape)
            w += (times * m * alpha / down.shape[0] * delta).float()
    return merged


def _outputs(components: dict) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 49407, (1, 77), generator=gen)
    with torch.no_grad():
        hidden = components["text_encoder"](ids).last_hidden_state
        x = torch.randn(1, 4, 8, 8, generator=gen)
        ctx = torch.randn(1, 77, 64, generator=gen)
        return hidden, components["unet"](x, 500, ctx).sample


def test_output_equals_independent_merge_and_weights_restored(sd1: dict, lora_file: tuple[Path, dict]) -> None:
    path, modules = lora_file
    snap = _snapshot(sd1)
    before = _outputs(sd1)
    spec = NetworkSpec(read_network(path), te_multiplier=0.7, unet_multiplier=0.4)
    with applied_networks(sd1, [spec], family="sd1") as summary:
        got = _outputs(sd1)
    assert summary.patched == (("style", 3),)
    want = _outputs(_merged_copy(sd1, modules, 0.7, 0.4))
    for g, w, b in zip(got, want, before):
        assert (g - b).abs().max() > 1e-6, "the LoRA had no visible effect"
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    _assert_same(sd1, snap)


def test_same_lora_twice_uses_last_multiplier_twice(sd1: dict, lora_file: tuple[Path, dict]) -> None:
    path, modules = lora_file
    net = read_network(path)
    with applied_networks(sd1, [NetworkSpec(net, 0.5), NetworkSpec(net, 1.0)]):
        got = _outputs(sd1)
    want = _outputs(_merged_copy(sd1, modules, 1.0, 1.0, times=2))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_restored_when_the_body_raises(sd1: dict, lora_file: tuple[Path, dict]) -> None:
    snap = _snapshot(sd1)
    with pytest.raises(RuntimeError, match="boom"):
        with applied_networks(sd1, [NetworkSpec(read_network(lora_file[0]), 1.0)]):
            assert not torch.equal(sd1["unet"].get_submodule(TO_Q).weight, snap[f"unet.{TO_Q}.weight"])
            raise RuntimeError("boom")
    _assert_same(sd1, snap)


def test_misspelt_key_is_refused_and_nothing_changes(sd1: dict, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    good = "lora_unet_" + TO_Q.replace(".", "_")
    bad = good.replace("to_q", "to_qq")
    path = _write(tmp_path / "typo.safetensors", {good: (*_lora(gen, 32, 32, 2), 1.0), bad: (*_lora(gen, 32, 32, 2), 1.0)})
    snap = _snapshot(sd1)
    with pytest.raises(AdapterLoadError, match="to_qq"):
        with applied_networks(sd1, [NetworkSpec(read_network(path))]):
            pass
    _assert_same(sd1, snap)


def test_shape_mismatch_midway_restores_earlier_patches(sd1: dict, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(2)
    good = "lora_unet_" + TO_Q.replace(".", "_")
    wrong = "lora_unet_" + CONV1.replace(".", "_")
    path = _write(tmp_path / "wrong.safetensors", {good: (*_lora(gen, 32, 32, 2), 1.0), wrong: (*_lora(gen, 7, 5, 2), 1.0)})
    snap = _snapshot(sd1)
    with pytest.raises(AdapterLoadError, match="another model"):
        with applied_networks(sd1, [NetworkSpec(read_network(path))]):
            pass
    _assert_same(sd1, snap)


def test_corrupted_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{not json")
    with pytest.raises(AdapterLoadError, match="broken.safetensors"):
        read_network(path)


def test_sdxl_lora_refused_on_sd1(sd1: dict, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(4)
    path = _write(tmp_path / "xl.safetensors", {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (*_lora(gen, 64, 64, 2), 1.0)})
    with pytest.raises(AdapterLoadError, match="SDXL"):
        with applied_networks(sd1, [NetworkSpec(read_network(path))], family="sd1"):
            pass


def test_sdxl_ldm_named_keys_map_through_the_config(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    unet = tiny_unet("sdxl", "standard", gen)
    te1, te2 = tiny_text_encoders("sdxl", gen)
    comps = {"unet": unet, "text_encoder": te1, "text_encoder_2": te2}
    # tiny SDXL: 1 resnet per level, down_blocks.1 has attention -> input_blocks.(1 + 2*1 + 0).1
    target = "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_v"
    w = unet.get_submodule(target).weight
    up, down = _lora(gen, w.shape[0], w.shape[1], 2)
    t2 = te2.get_submodule(_te_path(te2, TE_Q)).weight
    up2, down2 = _lora(gen, t2.shape[0], t2.shape[1], 2)
    path = _write(tmp_path / "xl.safetensors", {
        "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_v": (up, down, 2.0),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (up2, down2, 1.0),
    })  # fmt: skip
    w0, t0 = w.clone(), t2.clone()
    with applied_networks(comps, [NetworkSpec(read_network(path), 0.5, 0.25)], family="sdxl"):
        torch.testing.assert_close(unet.get_submodule(target).weight, w0 + 0.25 * (up @ down))
        torch.testing.assert_close(te2.get_submodule(_te_path(te2, TE_Q)).weight, t0 + 0.5 * 0.5 * (up2 @ down2))
    assert torch.equal(unet.get_submodule(target).weight, w0)
    assert torch.equal(te2.get_submodule(_te_path(te2, TE_Q)).weight, t0)


def test_diffusers_peft_format_file(sd1: dict, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(6)
    unet, te = sd1["unet"], sd1["text_encoder"]
    w, t = unet.get_submodule(TO_Q).weight, te.get_submodule(TE_Q).weight
    a, b = torch.randn(2, w.shape[1], generator=gen), torch.randn(w.shape[0], 2, generator=gen)
    ta, tb = torch.randn(2, t.shape[1], generator=gen), torch.randn(t.shape[0], 2, generator=gen)
    path = tmp_path / "peft.safetensors"
    save_file({f"unet.{TO_Q}.lora_A.weight": a, f"unet.{TO_Q}.lora_B.weight": b,
               f"text_encoder.text_model.{TE_Q}.lora_A.weight": ta, f"text_encoder.text_model.{TE_Q}.lora_B.weight": tb},
              str(path))  # fmt: skip
    w0, t0 = w.clone(), t.clone()
    with applied_networks(sd1, [NetworkSpec(read_network(path), 0.5, 2.0)], family="sd1"):
        torch.testing.assert_close(unet.get_submodule(TO_Q).weight, w0 + 2.0 * (b @ a))
        torch.testing.assert_close(te.get_submodule(TE_Q).weight, t0 + 0.5 * (tb @ ta))
    assert torch.equal(unet.get_submodule(TO_Q).weight, w0) and torch.equal(te.get_submodule(TE_Q).weight, t0)
