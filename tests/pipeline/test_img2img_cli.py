"""``sdlab img2img`` / ``sdlab inpaint`` in-process: files written, options reach the request, bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlab.cli.main import main
from sdlab.infotext import parse_infotext
from sdlab.outputs import read_infotext

TINY = ["--steps", "2", "--sampler", "Euler", "--model", "tiny-sd1", "--seed", "4"]


def run(models_root: Path, *args: str) -> int:
    return main(["--models-dir", str(models_root), "--device", "cpu", *args])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli-inputs")
    rng = np.random.default_rng(1)
    image = folder / "in.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    mask.save(folder / "mask.png")
    return image, folder / "mask.png"


def last_path(capsys) -> Path:
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def test_img2img_writes_an_image_with_its_settings(models_root: Path, files, tmp_path: Path, capsys) -> None:
    image, _ = files
    assert run(models_root, "img2img", str(image), "a red circle", *TINY, "--strength", "0.6",
               "--resize-mode", "Crop and resize", "--width", "32", "--height", "48", "--out", str(tmp_path)) == 0
    out = last_path(capsys)
    assert Image.open(out).size == (32, 48)
    params = parse_infotext(read_infotext(out) or "")
    assert params["Denoising strength"] == "0.6" and params["Prompt"] == "a red circle"


def test_inpaint_keeps_unmasked_pixels_and_writes_mask_keys(models_root: Path, files, tmp_path: Path, capsys) -> None:
    image, mask = files
    assert run(models_root, "inpaint", str(image), str(mask), "a hole", *TINY, "--mask-blur", "0", "--invert",
               "--inpaint-area", "Only masked", "--padding", "8", "--masked-content", "latent nothing",
               "--out", str(tmp_path)) == 0
    out = last_path(capsys)
    a, b = np.asarray(Image.open(out).convert("RGB")), np.asarray(Image.open(image))
    inside = np.asarray(Image.open(mask)) == 255  # inverted: the inside is kept
    assert np.array_equal(a[inside], b[inside])
    params = parse_infotext(read_infotext(out) or "")
    assert params["Mask mode"] == "Inpaint not masked" and params["Masked content"] == "latent nothing"
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "8"


def test_bad_input_exits_2(models_root: Path, files, tmp_path: Path, capsys) -> None:
    image, mask = files
    assert run(models_root, "img2img", str(tmp_path / "missing.png"), "x", *TINY) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run(models_root, "img2img", str(image), "x", *TINY, "--strength", "1.5") == 2
    assert "denoising_strength" in capsys.readouterr().err
    small_mask = tmp_path / "small.png"
    Image.new("L", (32, 32)).save(small_mask)
    assert run(models_root, "inpaint", str(image), str(small_mask), "x", *TINY) == 2
    assert "mask is 32x32" in capsys.readouterr().err
    assert run(models_root, "inpaint", str(image), "alpha", "x", *TINY) == 2
    assert "no transparent pixels" in capsys.readouterr().err
    assert run(models_root, "img2img", str(image), "x", *TINY, "--resize-mode", "squash") == 2
    assert "resize mode" in capsys.readouterr().err
