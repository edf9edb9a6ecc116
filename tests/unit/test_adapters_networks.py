"""Delta formulas against independent float64 computations; key mapping; type detection errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.keymap import ldm_unet_path, split_key
from sdlab.models.adapters.networks import NetworkModule, compute_delta, deviations_for, detect_type

GEN = torch.Generator().manual_seed(11)


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN) * 0.1


def _mod(**parts: torch.Tensor) -> NetworkModule:
    return NetworkModule("m", {k.replace("__", "."): v for k, v in parts.items()})


def _close(got: torch.Tensor, want: np.ndarray) -> None:
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-7)


def test_lora_scale_multiplier_and_dyn_dim() -> None:
    w, up, down = _r(6, 5), _r(6, 4), _r(4, 5)
    m = _mod(lora_up__weight=up, lora_down__weight=down, alpha=torch.tensor(2.0))
    _close(compute_delta(m, w, 0.8).weight, 0.8 * 0.5 * (up.double().numpy() @ down.double().numpy()))
    # dyn_dim keeps alpha / full rank
    want = 0.5 * (up[:, :2].double().numpy() @ down[:2].double().numpy())
    _close(compute_delta(m, w, 1.0, dyn_dim=2).weight, want)


def test_peft_names_drop_alpha() -> None:
    w, up, down = _r(6, 5), _r(6, 4), _r(4, 5)
    m = _mod(lora_B__weight=up, lora_A__weight=down, alpha=torch.tensor(2.0))
    _close(compute_delta(m, w, 1.0).weight, up.double().numpy() @ down.double().numpy())


def test_loha_is_hadamard_of_two_products() -> None:
    w = _r(6, 5)
    a1, b1, a2, b2 = _r(6, 3), _r(3, 5), _r(6, 3), _r(3, 5)
    m = _mod(hada_w1_a=a1, hada_w1_b=b1, hada_w2_a=a2, hada_w2_b=b2, alpha=torch.tensor(1.5))
    n = {k: v.double().numpy() for k, v in dict(a1=a1, b1=b1, a2=a2, b2=b2).items()}
    _close(compute_delta(m, w, 0.5).weight, 0.5 * 0.5 * (n["a1"] @ n["b1"]) * (n["a2"] @ n["b2"]))


def test_lokr_kronecker_full_factors_ignore_alpha() -> None:
    w, k1, k2 = _r(6, 4), _r(2, 2), _r(3, 2)
    m = _mod(lokr_w1=k1, lokr_w2=k2, alpha=torch.tensor(7.0))
    _close(compute_delta(m, w, 1.0).weight, np.kron(k1.double().numpy(), k2.double().numpy()))


def test_ia3_scales_output_rows_and_on_conv_follows_lycoris() -> None:
    w, v = _r(4, 3), _r(4)
    m = _mod(weight=v, on_input=torch.tensor(0))
    _close(compute_delta(m, w, 1.0).weight, w.double().numpy() * v.double().numpy()[:, None])
    wc, vc = _r(4, 3, 3, 3), _r(1, 4, 1, 1)
    mc = _mod(weight=vc, on_input=torch.tensor(0))
    assert deviations_for(mc, wc) == ("ia3_on_output_conv",)
    _close(compute_delta(mc, wc, 2.0).weight, 2.0 * wc.double().numpy() * vc.double().numpy().reshape(4, 1, 1, 1))


def test_oft_rotation_is_orthogonal_blend() -> None:
    w, blocks = _r(8, 5), _r(2, 4, 4)
    d = compute_delta(_mod(oft_blocks=blocks), w, 1.0).weight
    rotated = (w + d).double()
    # a block rotation keeps each block's column norms
    for k in range(2):
        np.testing.assert_allclose(rotated[4 * k : 4 * k + 4].norm(dim=0).numpy(), w[4 * k : 4 * k + 4].double().norm(dim=0).numpy(), rtol=1e-5)
    _close(compute_delta(_mod(oft_blocks=blocks), w, 0.25).weight, 0.25 * d.double().numpy())


def test_dora_both_layouts_hit_their_targets_at_multiplier_one() -> None:
    w, up, down = _r(6, 5), _r(6, 2), _r(2, 5)
    d_in, d_out = torch.rand(1, 5, generator=GEN) + 0.5, torch.rand(6, 1, generator=GEN) + 0.5
    merged_in = w + compute_delta(_mod(lora_up__weight=up, lora_down__weight=down, dora_scale=d_in), w, 1.0).weight
    merged_out_m = _mod(lora_up__weight=up, lora_down__weight=down, dora_scale=d_out)
    merged_out = w + compute_delta(merged_out_m, w, 1.0).weight
    torch.testing.assert_close(merged_in.norm(dim=0, keepdim=True), d_in)
    torch.testing.assert_close(merged_out.norm(dim=1, keepdim=True), d_out)
    assert deviations_for(merged_out_m, w) == ("dora_out_layout",)


def test_unknown_module_type_and_shape_mismatch_raise() -> None:
    with pytest.raises(AdapterLoadError, match="match no known type"):
        detect_type(_mod(foo=_r(2)))
    with pytest.raises(AdapterLoadError, match="another model"):
        compute_delta(_mod(lora_up__weight=_r(3, 2), lora_down__weight=_r(2, 3)), _r(6, 5), 1.0)


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
        ("up_blocks.2.upsamplers.0.conv", "output_blocks.8.2.conv"),
        ("up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q", "output_blocks.11.1.transformer_blocks.0.attn1.to_q"),
    ],
)
def test_sd1_ldm_paths_match_a1111_table(diffusers: str, ldm: str) -> None:
    config = {"layers_per_block": 2, "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
    assert ldm_unet_path(diffusers, config) == ldm


def test_split_key_schemes() -> None:
    k = split_key("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight")
    assert (k.component, k.flat, k.part) == ("text_encoder_2", "text_model_encoder_layers_0_mlp_fc1", "lora_down.weight")
    k = split_key("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight")
    assert (k.component, k.flat, k.part) == ("unet", "down_blocks.0.attentions.0.proj_in", "lora_A.weight")
    k = split_key("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight")
    assert (k.flat, k.part) == ("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", "lora_up.weight")
    assert split_key("model.diffusion_model.x.weight") is None
