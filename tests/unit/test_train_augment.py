"""The emphasis augmentation of the default model's training (tools/train_augment.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from sdlab.prompt.encode_emphasis import EMPHASIS_MODES
from sdlab.prompt.tokenizer import ClipTokenizer
from sdlab.toyworld import COLOURS, HELD_OUT_PAIRS, random_scene

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """(train_augment, train_default_model), imported from tools/ with tools/ on sys.path for the test."""
    monkeypatch.syspath_prepend(str(TOOLS))
    return importlib.import_module("train_augment"), importlib.import_module("train_default_model")


def test_planned_captions_keep_held_out_pairs_unseen_and_name_the_truth_with_g_of_w(tools) -> None:
    aug, _ = tools
    rng = np.random.default_rng(7)
    truth_low, truth_high, n_low = 0, 0, 0
    for _ in range(6000):
        scene = random_scene(rng)
        planned, emphasis = aug.plan_emphasis(scene, rng, 1.5)
        assert (planned.colour, planned.shape) not in HELD_OUT_PAIRS
        assert planned.colour != planned.background
        changed = [a for a in ("colour", "background") if getattr(planned, a) != getattr(scene, a)]
        assert len(changed) <= 1 and emphasis.word in (planned.colour, planned.background)
        true = not changed
        if emphasis.weight >= 1.0:
            truth_high += not true  # must stay 0
        elif emphasis.weight < 0.1:
            n_low += 1
            truth_low += true
    assert truth_high == 0
    # at w < 0.1, g(w) is between 1/K and 1/K + 0.1 (K = 8-9 choices): about 0.12-0.2
    assert n_low > 200 and 0.07 < truth_low / n_low < 0.3


@pytest.mark.parametrize("weight, expected", [(0.0, 0.125), (0.5, 0.5625), (1.0, 1.0), (1.4, 1.0), (-1.0, 0.125)])
def test_truth_probability(tools, weight: float, expected: float) -> None:
    aug, _ = tools
    assert aug.truth_probability(weight, 8) == pytest.approx(expected)


def test_multipliers_weight_every_token_of_the_word_and_nothing_else(tools) -> None:
    aug, tdm = tools
    tok = ClipTokenizer.bundled("clip")
    ids = tdm.tokens(tok, ["a small cyan square on a red background", "a red circle", ""])
    m = aug.multipliers(tok, ids, [aug.Emphasis("cyan", 0.3), aug.Emphasis("red", 1.4), None])
    cyan = tok.encode("cyan")
    assert len(cyan) == 2  # the case that needs a token sequence, not one id
    row = ids[0].tolist()
    at = next(i for i in range(77) if row[i : i + 2] == cyan)
    assert m[0, at : at + 2].tolist() == pytest.approx([0.3, 0.3])
    assert int((m[0] != 1).sum()) == 2
    assert m[1, 2].item() == pytest.approx(1.4) and int((m[1] != 1).sum()) == 1
    assert bool((m[2] == 1).all())


def test_apply_emphasis_is_the_engines_original_mode_per_caption(tools) -> None:
    aug, _ = tools
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(3, 77, 16, generator=gen) + 0.5  # mean well away from 0: the factor is not clamped
    m = torch.ones(3, 77)
    m[0, 4], m[1, 2:4] = 0.2, 1.5
    got = aug.apply_emphasis(z, m)
    original = EMPHASIS_MODES.get("Original").apply
    for row in range(3):
        assert torch.allclose(got[row], original(z[row : row + 1], m[row : row + 1])[0], atol=1e-6)
    assert torch.equal(got[2], z[2])  # all-one weights: bit-identical


def test_the_mean_restoring_factor_is_clamped(tools) -> None:
    aug, _ = tools
    z = torch.zeros(1, 77, 4)
    z[0, 1], z[0, 2] = 1.0, -0.9  # mean 0.1 / 308; dropping token 1 makes it negative
    m = torch.ones(1, 77)
    m[0, 1] = 0.0
    got = aug.apply_emphasis(z, m)
    assert torch.allclose(got[0, 2], z[0, 2] * aug.RATIO_LIMITS[0])


def test_a_caption_whose_mean_is_exactly_zero_stays_finite(tools) -> None:
    """0/0 in the mean-restoring factor (a caption of the phase-4 encoder, see apply_emphasis) keeps z * m."""
    aug, _ = tools
    z = torch.zeros(2, 77, 4)
    z[:, 1], z[:, 2] = 1.0, -1.0
    m = torch.ones(2, 77)
    m[1, 3] = 1.4  # a weighted word whose features are 0: the weighted mean is 0 as well
    got = aug.apply_emphasis(z, m)
    assert torch.isfinite(got).all()
    assert torch.equal(got, z * m.unsqueeze(-1))


def _structure(caption: str) -> list[str]:
    colours = set(COLOURS.names())
    return ["<c>" if w in colours else w for w in re.findall(r"[a-z]+", caption) if w not in ("a", "an")]


def test_emphasis_draws_leave_the_caption_draws_of_earlier_phases_unchanged(tools) -> None:
    _, tdm = tools
    rng = np.random.default_rng(11)
    scenes = [tuple(vars(random_scene(rng)).values()) for _ in range(64)]
    idx = np.arange(64)
    plain = tdm.Recipe(clause_frac=0.5)
    base, none = tdm.step_captions(scenes, idx, np.random.default_rng(1), plain, np.random.default_rng(2))
    again, _ = tdm.step_captions(scenes, idx, np.random.default_rng(1), plain, np.random.default_rng(99))
    assert base == again and none == [None] * 64
    weighted = tdm.Recipe(clause_frac=0.5, emphasis_frac=1.0)
    caps, emphases = tdm.step_captions(scenes, idx, np.random.default_rng(1), weighted, np.random.default_rng(2))
    assert [_structure(c) for c in caps] == [_structure(c) for c in base]
    assert all((e is None) == (c == "") for c, e in zip(caps, emphases, strict=True))
    assert any(c != b for c, b in zip(caps, base, strict=True))


def test_blend_targets_keep_the_caption_true_and_weaken_only_the_emphasised_region(tools) -> None:
    aug, tdm = tools
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(400):
        scene = random_scene(rng)
        planned, emphasis = aug.plan_blend(scene, rng, 1.5)
        assert planned == scene and emphasis.word == getattr(scene, emphasis.attribute)
        assert 0.0 <= emphasis.weight <= 1.5
        seen.add(emphasis.attribute)
    assert seen == {"colour", "background"}
    scenes = [tuple(vars(random_scene(rng)).values()) for _ in range(64)]
    caps, emphases = tdm.step_captions(scenes, np.arange(64), np.random.default_rng(1),
                                      tdm.Recipe(emphasis_frac=1.0, emphasis_target="blend"), np.random.default_rng(2))
    plain, _ = tdm.step_captions(scenes, np.arange(64), np.random.default_rng(1), tdm.Recipe(), np.random.default_rng(2))
    assert caps == plain  # the blend target never changes a caption
    assert all(e.attribute for c, e in zip(caps, emphases, strict=True) if c)


@pytest.mark.parametrize("attribute", ["colour", "background"])
def test_render_blend_mixes_the_region_towards_the_other_colour_by_min_w_1(tools, attribute: str) -> None:
    aug, _ = tools
    from sdlab.toyworld import Scene, render

    scene = Scene("square", "red", "white", "centre", "large")
    plain = np.asarray(render(scene)).astype(np.float64)
    red, white = np.asarray(COLOURS.get("red").rgb, float), np.asarray(COLOURS.get("white").rgb, float)
    inside = (plain == red).all(axis=2)
    own, other = (red, white) if attribute == "colour" else (white, red)
    region = inside if attribute == "colour" else ~inside
    word = scene.colour if attribute == "colour" else scene.background
    for w, s in ((0.0, 0.0), (0.6, 0.6), (1.0, 1.0), (1.4, 1.0)):
        image = aug.render_blend(scene, aug.Emphasis(word, w, attribute)).astype(np.float64)
        assert np.allclose(image[region], np.rint(s * own + (1 - s) * other), atol=0.5)
        assert np.array_equal(image[~region], plain[~region])  # the other region is untouched
    with pytest.raises(ValueError, match="attribute"):
        aug.blend_colours(scene, aug.Emphasis("red", 0.5))


def _named_colours(text: str) -> set[str]:
    return {c for c in COLOURS.names() if re.search(rf"\b{c}\b", text)}


def test_late_colour_swaps_rename_the_shape_colour_only_below_the_bound(tools) -> None:
    """At frac 1 every plain caption under the bound names the background and another shape colour (never a
    held-out pair); captions at or above the bound, empty ones and emphasised ones are kept."""
    aug, _ = tools
    rng = np.random.default_rng(3)
    scenes = [random_scene(rng) for _ in range(200)]
    captions = [f"a {s.colour} {s.shape} on a {s.background} background" for s in scenes]
    captions[5] = ""
    emphases = [None] * len(scenes)
    emphases[7] = aug.Emphasis(scenes[7].colour, 0.5, "colour")
    t = [int(x) for x in rng.integers(0, 1000, len(scenes))]
    t[5] = t[7] = 10
    out = aug.late_colour_swaps(scenes, captions, emphases, t, 400, 1.0, np.random.default_rng(0))
    swapped = 0
    for k, (scene, before, after) in enumerate(zip(scenes, captions, out, strict=True)):
        if t[k] >= 400 or k in (5, 7):
            assert after == before
            continue
        (named_shape,) = _named_colours(after) - {scene.background}
        assert scene.background in _named_colours(after) and named_shape != scene.colour
        assert (named_shape, scene.shape) not in HELD_OUT_PAIRS
        swapped += 1
    assert swapped > 50


def test_late_colour_swaps_at_frac_zero_change_nothing(tools) -> None:
    aug, _ = tools
    rng = np.random.default_rng(4)
    scenes = [random_scene(rng) for _ in range(50)]
    captions = [f"{s.background} background, {s.colour} {s.shape}" for s in scenes]
    assert aug.late_colour_swaps(scenes, captions, [None] * 50, [0] * 50, 400, 0.0, rng) == captions
