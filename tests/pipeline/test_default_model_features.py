"""Features shown to *work* on the embedded default model (toyworld-64), judged by the toyworld analyser.

Every check compares two generations that differ only in the feature under test, over a fixed batch of
seeds, and asserts the direction of the change the feature should make. The thresholds leave one seed of
eight as slack; the figures measured when the tests were written are in each docstring (Euler a, 20
steps, CFG 7, 64x64, seeds 100..107, fp32 CPU).

What this model does *not* show, measured and left out on purpose: emphasis above 1 adds little (a red
circle is fully red at w = 1: area 0.117 -> 0.120 at 1.4), and prompt editing blends most at X = 0.5-0.7
but snaps back to the first colour from X = 0.9 (``[red:blue:0.9]`` is red on 8/8 seeds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlab.cli.main import main
from sdlab.engine import Engine
from sdlab.toyworld import COLOURS, Analysis, analyse
from sdlab.types import GenerationRequest, HiresFix

SEED = 100
BATCH = 8
SLACK = 1
"""Seeds of the batch allowed to go against the expected direction."""


def generate(engine: Engine, prompt: str, negative: str = "", **fields: object) -> list[Image.Image]:
    """The batch of images for seeds SEED..SEED+BATCH-1 (Euler a, 20 steps, CFG 7)."""
    request = GenerationRequest(prompt=prompt, negative_prompt=negative, seed=SEED, batch_size=BATCH,
                                sampler="Euler a", steps=20, cfg_scale=7.0, **fields)
    return [image.image for image in engine.generate(request).images]


def analyses(images: list[Image.Image]) -> list[Analysis]:
    """The analyser's reading of each image, at the world's 64x64 size."""
    return [analyse(image if image.size == (64, 64) else image.resize((64, 64), Image.Resampling.BOX))
            for image in images]


def colour_area(image: Image.Image, name: str, radius: float = 60.0) -> float:
    """Fraction (0..1) of pixels within ``radius`` (RGB Euclidean, 0..255 units) of palette colour ``name``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    target = np.asarray(COLOURS.get(name).rgb, dtype=np.float64)
    return float((np.linalg.norm(pixels - target, axis=2) < radius).mean())


def areas(images: list[Image.Image], name: str) -> list[float]:
    return [colour_area(image, name) for image in images]


def count(values: list[object], wanted: object) -> int:
    return sum(value == wanted for value in values)


def test_negative_prompt_removes_what_it_names(embedded: Engine) -> None:
    """"a red circle" fills the background red on 8 of 8 seeds (the analyser then finds no shape); with the
    negative "red background" no background is red (0/8: cyan or white) and every shape is red or orange
    (7 + 1 of 8)."""
    plain = analyses(generate(embedded, "a red circle"))
    negated = analyses(generate(embedded, "a red circle", "red background"))
    assert count([a.background for a in plain], "red") >= 5 - SLACK
    assert count([a.background for a in negated], "red") <= SLACK
    assert sum(a.colour in ("red", "orange") for a in negated) >= BATCH - SLACK


def test_a_low_emphasis_weight_fades_the_colour_out(embedded: Engine) -> None:
    """``(red:0.2)`` draws a circle too pale to count as red, ``(red:1)`` a red one: the red area grows on
    every seed (measured 0.000 -> 0.117 mean, 8/8)."""
    prompt = "a (red:{w}) circle on a white background"
    weak, plain = (areas(generate(embedded, prompt.format(w=w)), "red") for w in (0.2, 1.0))
    assert sum(b > a for a, b in zip(weak, plain, strict=True)) >= BATCH - SLACK
    assert np.mean(plain) > 5 * np.mean(weak)


@pytest.mark.parametrize(("template", "colour"), [
    ("a ({c}:{w}) circle on a white background", "red"),
    ("a ({c}:{w}) circle on a white background", "blue"),
    ("a ({c}:{w}) circle on a white background", "green"),
    ("({c}:{w}) background, a small white square", "blue"),
])
def test_emphasis_from_0_6_to_1_4_grows_the_colour(embedded: Engine, template: str, colour: str) -> None:
    """The issue's pair: the colour's area grows from ``(c:0.6)`` to ``(c:1.4)`` on 8/8 seeds for a red, a
    blue and a green circle (means 0.000 -> 0.120, 0.000 -> 0.100, 0.011 -> 0.109: at 0.6 the shape is
    drawn paler, outside the 60-unit radius) and a blue background (0.000 -> 0.925). Measured and left
    out: a red or green background is already at full strength at 0.6 (0.944 and 0.938)."""
    low, high = (areas(generate(embedded, template.format(c=colour, w=w)), colour) for w in (0.6, 1.4))
    assert sum(b > a for a, b in zip(low, high, strict=True)) >= BATCH - SLACK
    assert np.mean(high) > np.mean(low)


def towards_blue(image: Image.Image) -> float:
    """Where the shape's mean colour (pixels over 100 from white) lies on the line from palette red (0) to
    palette blue (1): its projection, in units of the red-blue distance."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    red, blue, white = (np.asarray(COLOURS.get(name).rgb, dtype=np.float64) for name in ("red", "blue", "white"))
    shape = pixels[np.linalg.norm(pixels - white, axis=1) > 100].mean(0)
    return float(np.dot(shape - red, blue - red) / np.dot(blue - red, blue - red))


def test_prompt_editing_switches_the_prompt_at_its_step(embedded: Engine) -> None:
    """``[red:blue:X]`` follows "red" until step X of 20, then "blue": switched after step 2 the circle is
    blue (projection 0.75-0.88 on the red -> blue line, as plain "blue"), switched at step 19 it is red
    (-0.03-0.04, as plain "red")."""
    early = [towards_blue(i) for i in generate(embedded, "a [red:blue:0.1] circle on a white background")]
    late = [towards_blue(i) for i in generate(embedded, "a [red:blue:19] circle on a white background")]
    assert sum(t > 0.7 for t in early) >= BATCH - SLACK, early
    assert sum(t < 0.15 for t in late) >= BATCH - SLACK, late


def test_prompt_editing_lands_between_its_two_colours(embedded: Engine) -> None:
    """The issue's check: ``[red:blue:0.5]`` (red for 10 steps, then blue) draws a colour between red and
    blue more often than either prompt alone. The analyser reads it as purple, the palette colour between
    them, on 8/8 seeds (projection 0.66-0.78 on the red -> blue line; mean RGB (97, 35, 188)); plain "red"
    reads purple on 0/8, plain "blue" on 2/8 (this model's blue leans purple: projection 0.75-0.88)."""
    prompt = "a {} circle on a white background"
    between = {word: count([a.colour for a in analyses(generate(embedded, prompt.format(word)))], "purple")
               for word in ("[red:blue:0.5]", "red", "blue")}
    assert between["[red:blue:0.5]"] >= BATCH - SLACK, between
    assert between["[red:blue:0.5]"] > max(between["red"], between["blue"]), between


def test_hires_fix_keeps_colour_background_and_position(embedded: Engine) -> None:
    """A 2x Latent hires pass (denoise 0.5) returns 128x128 images whose shape colour, background and
    position equal those of the 64x64 first pass (measured 8/8 on each)."""
    prompt = "a yellow star on a purple background"
    first = generate(embedded, prompt)
    hires = generate(embedded, prompt, hires=HiresFix(scale=2.0, upscaler="Latent", denoising_strength=0.5))
    assert all(image.size == (128, 128) for image in hires)
    before, after = analyses(first), analyses(hires)
    for attribute in ("colour", "background", "position"):
        kept = [getattr(b, attribute) == getattr(a, attribute) for b, a in zip(before, after, strict=True)]
        assert sum(kept) >= BATCH - SLACK, attribute
    assert count([a.colour for a in after], "yellow") >= BATCH - SLACK


def test_batch_image_k_equals_the_single_image_of_seed_plus_k(embedded: Engine) -> None:
    """Image k of a batch of 3 equals the single image of seed + k, to one 8-bit level.

    The noise and the conditioning are identical; what differs is the UNet's batch (6 rows against 2):
    oneDNN picks its convolution kernels by batch size, which moves the UNet output by about 1e-6 and,
    after 8 steps, an occasional pixel by one level (measured: image 0 differs in a few pixels by 1,
    images 1 and 2 are identical). On the tiny random models of test_txt2img.py it is bit for bit.
    """
    def images(seed: int, batch: int) -> list[np.ndarray]:
        request = GenerationRequest(prompt="a green triangle on a white background", seed=seed, batch_size=batch,
                                    sampler="Euler a", steps=8, cfg_scale=7.0)
        return [np.asarray(image.image).astype(np.int16) for image in embedded.generate(request).images]

    batch = images(SEED, 3)
    for k in range(3):
        difference = np.abs(batch[k] - images(SEED + k, 1)[0])
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, k


def test_regenerating_from_an_image_gives_the_identical_image(tmp_path: Path, capsys) -> None:
    """``sdlab txt2img --from IMAGE`` reads the infotext back and reproduces the PNG's pixels exactly."""
    base = ["--models-dir", str(tmp_path / "models"), "--device", "cpu"]
    (tmp_path / "models").mkdir()
    assert main([*base, "txt2img", "a (blue:1.2) square on an orange background", "-n", "white background",
                 "--seed", "5", "--steps", "10", "--sampler", "DPM++ 2M", "--out", str(tmp_path / "a")]) == 0
    first = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*base, "txt2img", "--from", str(first), "--out", str(tmp_path / "b")]) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert first != second
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
