"""The adapters shipped for the embedded default model have the effect they were trained for.

``toy-teal`` (kohya LoRA, tools/train_toy_adapters.py) paints every shape teal whatever colour the prompt
names; ``toyorchid`` (A1111 textual-inversion embedding) names orchid, a colour the toy world never named.
Both files are read from the package through the ordinary models-folder path (``Lora/``, ``embeddings/``).
A shape's colour is the mean of the pixels far from the prompt's background colour; distances are RGB
Euclidean in 0..255 units. Seeds 100..107, Euler a, 20 steps, CFG 7, 64x64, fp32 CPU.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlab.engine import Engine
from sdlab.toyworld import COLOURS
from sdlab.types import GenerationRequest, GenerationResult

ADAPTERS = files("sdlab") / "data" / "default_model" / "adapters"
TEAL = (0, 128, 128)
ORCHID = (218, 112, 214)
BATCH = 8
SLACK = 1
NEAR = 60.0
"""A shape this close to the adapter's colour counts as having it."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy-models")
    for sub, name in (("Lora", "toy-teal.safetensors"), ("embeddings", "toyorchid.safetensors")):
        (root / sub).mkdir()
        with (ADAPTERS / name).open("rb") as src, (root / sub / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


@pytest.fixture(scope="module")
def toy(folder: Path) -> Engine:
    return Engine(models_dir=folder, device="cpu", dtype="fp32")


def run(engine: Engine, prompt: str) -> GenerationResult:
    return engine.generate(GenerationRequest(prompt=prompt, seed=100, batch_size=BATCH, sampler="Euler a", steps=20,
                                             cfg_scale=7.0))


def generate(engine: Engine, prompt: str) -> list[Image.Image]:
    return [image.image for image in run(engine, prompt).images]


def shape_colour(image: Image.Image, background: str) -> np.ndarray | None:
    """Mean RGB of the pixels more than 80 away from ``background`` (None when fewer than 20: no shape)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    shape = pixels[np.linalg.norm(pixels - np.asarray(COLOURS.get(background).rgb, np.float64), axis=1) > 80]
    return shape.mean(0) if len(shape) >= 20 else None


def distance(colour: np.ndarray | None, rgb: tuple[int, int, int]) -> float:
    return float("inf") if colour is None else float(np.linalg.norm(colour - np.asarray(rgb, np.float64)))


def nearest(colour: np.ndarray | None, extra: str, rgb: tuple[int, int, int]) -> str | None:
    """The name of the palette colour or of ``extra`` (at ``rgb``) nearest to ``colour``."""
    if colour is None:
        return None
    candidates = {name: COLOURS.get(name).rgb for name in COLOURS.names()} | {extra: rgb}
    return min(candidates, key=lambda name: distance(colour, candidates[name]))


def colours(images: list[Image.Image], background: str) -> list[np.ndarray | None]:
    return [shape_colour(image, background) for image in images]


@pytest.mark.parametrize(("prompt", "named", "background"), [
    ("a red circle on a white background", "red", "white"),
    ("large green star, white background", "green", "white"),
])
def test_lora_paints_the_shape_teal(toy: Engine, prompt: str, named: str, background: str) -> None:
    """At weight 1 every shape's nearest colour is teal (8/8 for both prompts; mean 58 and 68 RGB units from
    teal); without the tag the shape has the colour the prompt names (8/8); at 0.5 it is already far from
    that colour (mean distance from red 13 -> 211, from green 40 -> 117). Measured limit, left out: on a
    black background the LoRA paints a green-teal, nearest palette green (0/8 teal for a yellow square)."""
    full = colours(generate(toy, f"{prompt} <lora:toy-teal:1>"), background)
    half = colours(generate(toy, f"{prompt} <lora:toy-teal:0.5>"), background)
    none = colours(generate(toy, prompt), background)
    assert sum(nearest(c, "teal", TEAL) == "teal" for c in full) >= BATCH - SLACK
    assert sum(nearest(c, "teal", TEAL) == named for c in none) >= BATCH - SLACK
    own = COLOURS.get(named).rgb
    assert np.mean([distance(c, own) for c in half]) > np.mean([distance(c, own) for c in none]) + 50


def test_lora_weight_scales_the_effect(toy: Engine) -> None:
    """The shape nears teal step by step as the weight grows: for a red circle on white the mean distance
    from teal is 257, 163, 75 and 58 RGB units at weights 0, 0.25, 0.5 and 1 (purple in between). A green
    star is not used: it is teal from weight 0.25 on (7/8) and stays at 67-69 units from teal."""
    prompt = "a red circle on a white background <lora:toy-teal:{}>"
    away = [np.mean([distance(c, TEAL) for c in colours(generate(toy, prompt.format(w)), "white")])
            for w in (0, 0.25, 0.5, 1)]
    assert all(a > b for a, b in zip(away, away[1:])), away


def test_lora_at_weight_zero_changes_nothing(toy: Engine) -> None:
    prompt = "a yellow square on a blue background"
    with_tag = generate(toy, f"{prompt} <lora:toy-teal:0>")
    without = generate(toy, prompt)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(with_tag, without, strict=True))


@pytest.mark.parametrize(("prompt", "background"), [
    ("large toyorchid star, black background", "black"),
    ("a toyorchid square on a purple background", "purple"),
    ("a toyorchid square on a blue background", "blue"),
])
def test_embedding_trigger_yields_its_colour(toy: Engine, embedded: Engine, prompt: str, background: str) -> None:
    """With ``embeddings/toyorchid.safetensors`` the trigger draws orchid shapes, nearer orchid than any
    colour the world names and on average within NEAR of it; without the file the same prompt (the trigger
    then is plain, untrained text) draws none that are orchid.

    Measured (seeds 100..107): nearest orchid 8/8 on each; 18-35 RGB units from orchid on black,
    23-30 on purple, 30-69 on blue (mean 54). Limit of this model, not tested: on green, orange and red the
    shape lies between orchid and magenta (25-71 units from orchid, nearest orchid on 2-4 of 8), on white
    it is magenta, on yellow and cyan nearly white."""
    result = run(toy, prompt)
    assert all("TI: toyorchid" in image.infotext for image in result.images)
    learned = colours([image.image for image in result.images], background)
    plain = [distance(c, ORCHID) for c in colours(generate(embedded, prompt), background)]
    assert sum(nearest(c, "orchid", ORCHID) == "orchid" for c in learned) >= BATCH - SLACK, learned
    assert np.mean([distance(c, ORCHID) for c in learned]) < NEAR, learned
    assert sum(d > NEAR for d in plain) >= BATCH - SLACK, plain
