"""LoRA and textual inversion through Engine.generate: effect, weight 0, scoping, infotext, relinking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_checkpoints import make_tiny_checkpoint
from safetensors.torch import save_file

from sdlab.engine import Engine
from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.infotext import parse_infotext
from sdlab.types import GenerationRequest, LoraRef

BASE = GenerationRequest(prompt="a red circle", width=64, height=64, steps=3, sampler="Euler", seed=3)


TARGET = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"


def strong_lora(gen: torch.Generator, rank: int = 4) -> dict[str, torch.Tensor]:
    """A kohya LoRA on a few tiny-SD1 layers, strong enough to change a 64x64 image."""
    targets = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (32, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_out": (32, 32),
        "lora_unet_up_blocks_1_attentions_0_proj_out": (32, 32),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (64, 64),
    }
    state = {}
    for name, (out_f, in_f) in targets.items():
        state[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen)
        state[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen)
        state[f"{name}.alpha"] = torch.tensor(float(rank))
    return state


@pytest.fixture(scope="module")
def net_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("netmodels")
    (root / "Stable-diffusion").mkdir()
    (root / "Lora").mkdir()
    (root / "embeddings").mkdir()
    make_tiny_checkpoint(root / "Stable-diffusion" / "tiny.safetensors", "sd1", seed=1)
    gen = torch.Generator().manual_seed(5)
    save_file(strong_lora(gen), str(root / "Lora" / "tinylora.safetensors"))
    save_file({"emb_params": torch.randn(2, 64, generator=gen) * 3}, str(root / "embeddings" / "zorblax.safetensors"))
    return Engine(models_dir=root, device="cpu")


def px(result) -> np.ndarray:
    return np.asarray(result.images[0].image).astype(int)


def snapshot(engine: Engine) -> dict[str, torch.Tensor]:
    model = engine.load()
    modules = {"unet": model.unet, "te": model.text_encoders[0]}
    return {f"{k}.{n}": p.detach().clone() for k, m in modules.items() for n, p in m.state_dict().items()}


def test_lora_changes_the_image_and_weight_zero_does_not(net_engine: Engine) -> None:
    original = net_engine.load().unet.get_parameter(TARGET).detach().clone()
    seen: list[bool] = []

    def check_patched(event: object) -> None:
        seen.append(not torch.equal(net_engine.load().unet.get_parameter(TARGET), original))

    plain = px(net_engine.generate(BASE))
    with_lora = net_engine.generate(BASE.replace(prompt="a red circle <lora:tinylora:1>"), progress=check_patched)
    assert seen and all(seen), "the LoRA was not applied while sampling"
    assert np.abs(px(with_lora) - plain).max() > 0
    zero = px(net_engine.generate(BASE.replace(prompt="a red circle <lora:tinylora:0>")))
    assert np.array_equal(zero, plain)
    via_request = net_engine.generate(BASE.replace(loras=(LoraRef("tinylora", 1.0),)))
    assert np.array_equal(px(via_request), px(with_lora))
    params = parse_infotext(with_lora.images[0].infotext)
    assert params["Lora hashes"].startswith("tinylora: ") and len(params["Lora hashes"].split(": ")[1]) == 12


def test_weights_are_restored_bit_for_bit_after_a_request(net_engine: Engine) -> None:
    before = snapshot(net_engine)
    net_engine.generate(BASE.replace(prompt="x <lora:tinylora:0.7:1.3>"))
    after = snapshot(net_engine)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_lora_and_unsupported_tags_are_errors(net_engine: Engine) -> None:
    with pytest.raises(ModelNotFoundError, match="tinylora"):
        net_engine.generate(BASE.replace(prompt="x <lora:tinylorra:1>"))
    with pytest.raises(InvalidRequestError, match="hypernet"):
        net_engine.generate(BASE.replace(prompt="x <hypernet:foo:1>"))


def test_embedding_trigger_inserts_its_vectors(net_engine: Engine) -> None:
    plain = px(net_engine.generate(BASE.replace(prompt="a circle")))
    result = net_engine.generate(BASE.replace(prompt="a zorblax circle"))
    assert np.abs(px(result) - plain).max() > 0
    params = parse_infotext(result.images[0].infotext)
    assert params["TI"] == "zorblax" and params["TI hashes"].startswith("zorblax: ")
    negative = net_engine.generate(BASE.replace(prompt="a circle", negative_prompt="zorblax"))
    assert np.abs(px(negative) - plain).max() > 0


def test_renamed_lora_is_found_again_by_hash(net_engine: Engine, tmp_path: Path) -> None:
    first = net_engine.generate(BASE.replace(prompt="a red circle <lora:tinylora:1>"))
    text = first.images[0].infotext.replace("<lora:tinylora:1>", "<lora:oldname:1>").replace("tinylora:", "oldname:")
    request = net_engine.request_from_infotext(text)
    assert "<lora:tinylora:1>" in request.prompt
    assert np.array_equal(px(net_engine.generate(request)), px(first))


def test_cli_lists_loras_and_embeddings(net_engine: Engine, capsys) -> None:
    from sdlab.cli.main import main

    root = str(net_engine.models_dir.root)
    assert main(["--models-dir", root, "loras"]) == 0
    out = capsys.readouterr().out
    assert "tinylora [" in out and "lora" in out and "rank 4" in out  # a 64-wide tiny LoRA has no standard family
    assert main(["--models-dir", root, "embeddings", "--json"]) == 0
    (info,) = __import__("json").loads(capsys.readouterr().out)
    assert info["name"] == "zorblax" and info["vectors"] == 2 and info["widths"] == [64]
