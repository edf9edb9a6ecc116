"""TextConditioner on tiny random CLIP models: SD1 / SD2 / SDXL layer choice, padding ids, pooled output,
empty-negative zeroing, batching (one encoder pass per chunk index), de-duplication and TI slots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
import torch
from helpers.embedding_lookup import FakeLookup
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdlab.errors import InvalidRequestError
from sdlab.prompt.encode import EncodeOptions, TextConditioner
from sdlab.prompt.encode_family import FAMILIES, FamilySpec
from sdlab.prompt.encode_pad import pad_cond_uncond
from sdlab.prompt.tokenizer import EOS_ID, ClipTokenizer

LONG = "cat " * 100  # two chunks


def _config(hidden: int, eos: int = EOS_ID) -> CLIPTextConfig:
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=24, bos_token_id=49406, eos_token_id=eos,
    )
    config._attn_implementation = "eager"
    return config


def _model(hidden: int, projection: bool = False, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = cls(_config(hidden, eos=2 if projection else EOS_ID)).eval()
    with torch.no_grad():  # non-trivial LayerNorms so every layer choice is distinguishable
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.1, 0.2)
    return model


def _family(name: str) -> FamilySpec:
    family = FAMILIES.get(name)
    return replace(family, encoders=tuple(replace(e, width=None) for e in family.encoders))


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, ClipTokenizer]:
    return {"clip": ClipTokenizer.bundled("clip"), "open_clip": ClipTokenizer.bundled("open_clip")}


def _conditioner(name: str, tokenizers: dict[str, ClipTokenizer]) -> tuple[TextConditioner, list[torch.nn.Module]]:
    family = _family(name)
    models = [_model(32 + 16 * i, projection=spec.pooled, seed=i) for i, spec in enumerate(family.encoders)]
    return TextConditioner(family, [tokenizers[s.tokenizer] for s in family.encoders], models), models


def _ids(tokenizer: ClipTokenizer, text: str, pad: int = EOS_ID) -> torch.Tensor:
    ids = [49406, *tokenizer.encode(text), EOS_ID]
    return torch.tensor([ids + [pad] * (77 - len(ids))])


def _recorder(model: torch.nn.Module) -> list[torch.Tensor]:
    calls: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["input_ids"].clone()), with_kwargs=True)
    return calls


def test_sd1_clip_skip_uses_final_norm_of_earlier_layer(tokenizers) -> None:
    cond, (model,) = _conditioner("sd1", tokenizers)
    ids = _ids(tokenizers["clip"], "a red ball")
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    skip1 = cond.encode(["a red ball"]).cond
    skip2 = cond.encode(["a red ball"], EncodeOptions(clip_skip=2)).cond
    assert torch.equal(skip1, out.last_hidden_state)
    assert torch.equal(skip2, model.final_layer_norm(out.hidden_states[-2]))
    with pytest.raises(InvalidRequestError, match="clip_skip"):
        cond.encode(["x"], EncodeOptions(clip_skip=4))


def test_sd2_pads_with_zero_and_ignores_clip_skip(tokenizers) -> None:
    cond, (model,) = _conditioner("sd2", tokenizers)
    calls = _recorder(model)
    result = cond.encode(["a red ball"])
    ids = _ids(tokenizers["open_clip"], "a red ball", pad=0)
    assert torch.equal(calls[0], ids)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    assert torch.equal(result.cond, model.final_layer_norm(out.hidden_states[-2]))
    assert torch.equal(cond.encode(["a red ball"], EncodeOptions(clip_skip=2)).cond, result.cond)
    assert result.pooled is None


def test_sdxl_concatenates_penultimate_states_and_pools_first_chunk(tokenizers) -> None:
    cond, (clip_l, big_g) = _conditioner("sdxl", tokenizers)
    result = cond.encode([LONG])
    assert result.cond.shape == (1, 154, 32 + 48) and result.pooled.shape == (1, 24)
    ids_l = _ids(tokenizers["clip"], "cat " * 75)[:, :77]
    ids_l[0, 76] = EOS_ID
    with torch.no_grad():
        out_l = clip_l(input_ids=ids_l, output_hidden_states=True)
        out_g = big_g(input_ids=ids_l, output_hidden_states=True)  # full chunk: no padding after EOS
    assert torch.equal(result.cond[:, :77, :32], out_l.hidden_states[-2])
    assert torch.equal(result.cond[:, :77, 32:], out_g.hidden_states[-2])
    assert torch.allclose(result.pooled, out_g.text_embeds, atol=1e-6)
    skip_l = cond.encode([LONG], EncodeOptions(clip_skip=1, sdxl_clip_l_skip=True)).cond
    assert torch.equal(skip_l[:, :77, :32], out_l.hidden_states[-1])  # last layer, no final LayerNorm
    assert torch.equal(skip_l[..., 32:], result.cond[..., 32:])


def test_sdxl_empty_negative_is_zero_but_empty_positive_is_not(tokenizers) -> None:
    cond, _ = _conditioner("sdxl", tokenizers)
    negative = cond.encode(["", ""], negative=True)
    assert negative.cond.shape == (2, 77, 80) and not negative.cond.any() and not negative.pooled.any()
    assert cond.encode([""]).cond.any()
    assert cond.encode(["", "x"], negative=True).cond.any()


def test_one_encoder_pass_per_chunk_index_and_dedup(tokenizers) -> None:
    cond, (model,) = _conditioner("sd1", tokenizers)
    calls = _recorder(model)
    texts = ["(red:1.5) ball", LONG, "(red:1.5) ball"]
    result = cond.encode(texts)
    assert len(calls) == 2 and [c.shape[0] for c in calls] == [2, 2]
    assert result.cond.shape == (3, 154, 32) and result.token_counts == (2, 100, 2)
    assert torch.equal(result.cond[0], result.cond[2])
    # A1111 batch semantics: Original's mean uses the whole batch incl. the duplicate row.
    reference = _reference_original(model, tokenizers["clip"], cond, texts)
    assert torch.equal(result.cond, reference)
    assert not torch.equal(cond.encode(["(red:1.5) ball"]).cond[0], result.cond[0, :77])


def _reference_original(model, tokenizer, conditioner, texts: Sequence[str]) -> torch.Tensor:
    lines = conditioner.tokenize(texts)[0]
    pieces = []
    for index in range(2):
        chunks = [line.chunks[index] if index < len(line.chunks) else None for line in lines]
        ids = torch.tensor([c.tokens if c else (49406,) + (EOS_ID,) * 76 for c in chunks])
        m = torch.tensor([c.multipliers if c else (1.0,) * 77 for c in chunks])
        with torch.no_grad():
            z = model(input_ids=ids).last_hidden_state
        mean0 = z.mean()
        z = z * m[..., None]
        pieces.append(z * (mean0 / z.mean()))
    return torch.hstack(pieces)


def test_embedding_vectors_replace_slots_and_hook_is_removed(tokenizers) -> None:
    cond, (model,) = _conditioner("sd1", tokenizers)
    tok = tokenizers["clip"]
    target = tok.encode("red ball dog")
    vectors = model.get_input_embeddings().weight[target].detach().clone()
    lookup = FakeLookup(tok.encode("zzqemb"), vectors, "my:emb")
    options = EncodeOptions(emphasis="No norm", embeddings=lookup)
    with_emb = cond.encode(["a zzqemb"], options)
    plain = cond.encode(["a red ball dog"], EncodeOptions(emphasis="No norm"))
    assert torch.allclose(with_emb.cond, plain.cond, atol=1e-6)
    assert with_emb.extra_generation_params["TI"] == "myemb"
    assert not model.get_input_embeddings()._forward_hooks
    assert not torch.equal(cond.encode(["a zzqemb"]).cond, with_emb.cond)


def test_options_and_inputs_are_validated(tokenizers) -> None:
    cond, _ = _conditioner("sd1", tokenizers)
    with pytest.raises(InvalidRequestError, match="emphasis"):
        cond.encode(["x"], EncodeOptions(emphasis="Loud"))
    with pytest.raises(InvalidRequestError, match="list"):
        cond.encode("x")
    with pytest.raises(InvalidRequestError, match="hidden size"):
        TextConditioner("sd1", [tokenizers["clip"]], [_model(32)])
    assert cond.encode(["(x)"], EncodeOptions(emphasis="No norm")).extra_generation_params == {"Emphasis": "No norm"}


def test_pad_cond_uncond_modes() -> None:
    cond, uncond, empty = torch.ones(1, 154, 4), torch.zeros(1, 77, 4), torch.full((1, 77, 4), 7.0)
    assert pad_cond_uncond(cond, uncond).uncond.shape == (1, 77, 4)
    padded = pad_cond_uncond(cond, uncond, "pad", empty)
    assert padded.uncond.shape == (1, 154, 4) and (padded.uncond[:, 77:] == 7).all() and padded.infotext
    uncond[:, -1] = 3.0
    v0 = pad_cond_uncond(cond, uncond, "v0")
    assert (v0.uncond[:, 77:] == 3).all() and v0.cond is cond
    assert pad_cond_uncond(uncond, cond, "v0").uncond.shape == (1, 77, 4)


def test_original_emphasis_refuses_zero_weighted_mean() -> None:
    from sdlab.prompt.encode_emphasis import EMPHASIS_MODES

    original = EMPHASIS_MODES.get("Original").apply
    z = torch.tensor([[[1.0], [-1.0], [2.0]]])
    with pytest.raises(InvalidRequestError, match="No norm"):
        original(z, torch.tensor([[1.0, 3.0, 1.0]]))
    out = original(z, torch.tensor([[2.0, 1.0, 1.0]]))
    assert torch.allclose(out.mean(), z.mean())


def test_original_emphasis_leaves_an_unweighted_zero_mean_prompt_alone() -> None:
    """A plain prompt whose hidden states average exactly 0.0 (the default model's text encoder gives
    that for "a little white square on red, on the right") is not an error: no weight, no rescale."""
    from sdlab.prompt.encode_emphasis import EMPHASIS_MODES

    original = EMPHASIS_MODES.get("Original").apply
    z = torch.tensor([[[1.0], [-1.0], [2.0], [-2.0]]])
    assert z.mean() == 0
    assert original(z, torch.ones(1, 4)) is z
    half = original(z.half(), torch.ones(1, 4))
    assert half.dtype == torch.float32 and torch.equal(half, z)  # promoted like z * multipliers
    with pytest.raises(InvalidRequestError, match="No norm"):
        original(z, torch.tensor([[1.0, 1.0, 2.0, 2.0]]))
