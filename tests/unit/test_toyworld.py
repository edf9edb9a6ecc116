"""The toy world: determinism, captions, held-out pairs, and the analyser on ground truth."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sdlab.toyworld import (
    ATTRIBUTES,
    COLOURS,
    HELD_OUT_PAIRS,
    PHRASINGS,
    POSITIONS,
    RESERVED_WORDS,
    SHAPES,
    SIZES,
    TRAIN_PHRASINGS,
    Scene,
    analyse,
    caption,
    clause_caption,
    free_caption,
    matches,
    parse_caption,
    random_scene,
    render,
    training_sample,
)


def _attrs(scene: Scene) -> tuple[str, ...]:
    return tuple(getattr(scene, a) for a in ATTRIBUTES)


def test_world_has_the_required_variety() -> None:
    assert len(COLOURS) >= 8 and len(SHAPES) >= 4 and len(SIZES) >= 2
    assert {"left", "right", "top", "bottom", "centre"} <= set(POSITIONS.names())
    assert len(TRAIN_PHRASINGS) >= 3 and len(PHRASINGS) > len(TRAIN_PHRASINGS)


def test_palette_colours_are_well_separated() -> None:
    rgb = np.array([c.rgb for _, c in COLOURS], dtype=float)
    d = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(len(rgb)) * 1e9
    assert d.min() > 80


@pytest.mark.parametrize("seed", [0, 7, 123456])
def test_same_seed_gives_same_sample(seed: int) -> None:
    a, b = training_sample(seed), training_sample(seed)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert a[1] == b[1] and a[2] == b[2]
    assert a[0].size == (64, 64) and a[0].mode == "RGB"


def test_different_seeds_differ() -> None:
    captions = {training_sample(s)[1] for s in range(50)}
    assert len(captions) > 40


def test_image_shows_exactly_the_scene_colours() -> None:
    img, _, scene = training_sample(3)
    colours = {tuple(c) for c in np.asarray(img).reshape(-1, 3)}
    assert colours == {COLOURS.get(scene.colour).rgb, COLOURS.get(scene.background).rgb}


@pytest.mark.parametrize("phrasing", range(len(PHRASINGS)))
def test_every_phrasing_names_exactly_the_drawn_attributes(phrasing: int) -> None:
    rng = np.random.default_rng(phrasing)
    for _ in range(200):
        scene = random_scene(rng, allow_held_out=True)
        text = caption(scene, phrasing, rng)
        assert _attrs(parse_caption(text)) == _attrs(scene), text
        words = text.lower().replace(",", " ").split()
        assert sorted(w for w in words if w in COLOURS) == sorted([scene.colour, scene.background])
        assert [w for w in words if w in SHAPES] == [scene.shape]


def test_caption_examples_read_as_english() -> None:
    scene = Scene("circle", "red", "blue", "top left", "small")
    assert caption(scene, 0) == "a small red circle at the top left on a blue background"
    assert caption(scene, 1) == "blue background, small red circle at the top left"
    assert caption(Scene("star", "orange", "orange", "centre", "large"), 2).startswith("an orange star on an orange")


def test_clause_captions_name_the_scene_in_varied_orders() -> None:
    rng = np.random.default_rng(7)
    firsts = set()
    for _ in range(300):
        scene = random_scene(rng, allow_held_out=True)
        text = clause_caption(scene, rng)
        assert _attrs(parse_caption(text)) == _attrs(scene), text
        words = text.lower().replace(",", " ").split()
        assert sorted(w for w in words if w in COLOURS) == sorted([scene.colour, scene.background])
        assert words[words.index(scene.shape) - 1] == scene.colour, text
        bg_first = words[0] == scene.background or words[:2] in (["on", "a"], ["on", "an"], ["the", "background"])
        firsts.add("background" if bg_first else "position" if words[0] in ("at", "in", "on") else "subject")
    assert firsts == {"background", "position", "subject"}
    assert clause_caption(scene, np.random.default_rng(1)) == clause_caption(scene, np.random.default_rng(1))


def test_parse_caption_rejects_incomplete_captions() -> None:
    with pytest.raises(ValueError):
        parse_caption("a red circle")


def test_held_out_pairs_never_appear_in_training() -> None:
    seen = set()
    for seed in range(3000):
        _, text, scene = training_sample(seed)
        assert (scene.colour, scene.shape) not in HELD_OUT_PAIRS
        assert scene.colour != scene.background
        seen.add((scene.colour, scene.shape))
    all_pairs = {(c, s) for c in COLOURS.names() for s in SHAPES.names()}
    assert seen == all_pairs - HELD_OUT_PAIRS


def test_held_out_pairs_are_real_pairs() -> None:
    for colour, shape in HELD_OUT_PAIRS:
        assert colour in COLOURS and shape in SHAPES


def test_analyser_is_exact_on_ground_truth() -> None:
    n = 300
    wrong = {a: 0 for a in ATTRIBUTES}
    for seed in range(10_000, 10_000 + n):
        img, _, scene = training_sample(seed)
        for a, ok in matches(scene, analyse(img)).items():
            wrong[a] += not ok
    assert all(w <= n // 100 for w in wrong.values()), wrong


def test_analyser_tolerates_blur_noise_and_upscaling() -> None:
    rng = np.random.default_rng(0)
    n, wrong = 120, {a: 0 for a in ATTRIBUTES}
    for seed in range(20_000, 20_000 + n):
        img, _, scene = training_sample(seed)
        img = img.resize((128, 128), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1.2))
        px = np.asarray(img, dtype=float) + rng.normal(0, 10, (128, 128, 3))
        found = analyse(Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)))
        for a, ok in matches(scene, found).items():
            wrong[a] += not ok
    assert wrong["colour"] <= 1 and wrong["background"] == 0 and wrong["position"] <= 1, wrong
    assert wrong["shape"] <= n // 10, wrong


def test_analyser_reports_no_shape_on_a_plain_image() -> None:
    found = analyse(Image.new("RGB", (64, 64), COLOURS.get("green").rgb))
    assert found.background == "green"
    assert found.shape is None and found.colour is None and found.position is None


@pytest.mark.parametrize("shape", SHAPES.names())
def test_analyser_tells_every_shape_apart(shape: str) -> None:
    for size in SIZES.names():
        for position in POSITIONS.names():
            scene = Scene(shape, "white", "black", position, size)
            assert all(matches(scene, analyse(render(scene))).values()), (shape, size, position)


def test_packaged_default_model_is_a_small_a1111_sd1_checkpoint() -> None:
    from pathlib import Path

    import sdlab
    from sdlab.models.detect import detect_header
    from sdlab.models.files import read_header

    path = Path(sdlab.__file__).parent / "data" / "default_model" / "toyworld-64.safetensors"
    assert path.stat().st_size < 25_000_000
    header = read_header(path)
    names = list(header.shapes())
    for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all(n.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for n in names)
    assert detect_header(header).family == "sd1"


def test_free_captions_name_every_fact_and_avoid_the_reserved_words() -> None:
    rng = np.random.default_rng(5)
    colour_after_shape = background_first = 0
    for _ in range(2000):
        scene = random_scene(rng, allow_held_out=True)
        text = free_caption(scene, rng)
        words = re.findall(r"[a-z]+", text.lower())
        assert not RESERVED_WORDS & set(words), text
        assert not set("()[]<>") & set(text), text  # brackets would be emphasis or adapter syntax
        assert words.count(scene.shape) == 1 and sum(w in SHAPES for w in words) == 1, text
        assert sorted(w for w in words if w in COLOURS) == sorted([scene.colour, scene.background]), text
        assert any(w in SIZES.get(scene.size).words for w in words), text
        assert any(re.search(rf"\b{ph}\b", " ".join(words)) for ph in POSITIONS.get(scene.position).phrases), text
        colour_after_shape += words.index(scene.colour) > words.index(scene.shape)
        background_first += words.index(scene.background) < words.index(scene.shape)
    assert 100 < colour_after_shape < 1000 and 400 < background_first < 1600
    assert free_caption(scene, np.random.default_rng(3)) == free_caption(scene, np.random.default_rng(3))
