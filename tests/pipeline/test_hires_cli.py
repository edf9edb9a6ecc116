"""txt2img's --hires-* and --refiner options in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdlab.cli.main import main
from sdlab.infotext import parse_infotext
from sdlab.outputs import read_infotext

TINY = ["--width", "64", "--height", "48", "--steps", "2", "--sampler", "Euler", "--model", "tiny-sd1", "--seed", "3"]


def run(models_root: Path, *args: str) -> int:
    return main(["--models-dir", str(models_root), "--device", "cpu", *args])


def test_hires_options_and_regenerate_from_image(models_root: Path, tmp_path: Path, capsys) -> None:
    assert run(models_root, "txt2img", "a circle", *TINY, "--hires-scale", "1.5", "--hires-upscaler", "Nearest",
               "--hires-steps", "2", "--hires-denoise", "0.4", "--hires-prompt", "a square", "--out",
               str(tmp_path / "a")) == 0
    first = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert Image.open(first).size == (96, 72)
    params = parse_infotext(read_infotext(first) or "")
    assert params["Hires upscale"] == "1.5" and params["Hires upscaler"] == "Nearest"
    assert params["Hires steps"] == "2" and params["Hires prompt"] == "a square" and params["Denoising strength"] == "0.4"
    assert run(models_root, "txt2img", "--from", str(first), "--out", str(tmp_path / "b")) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_bad_hires_and_refiner_options_exit_2(models_root: Path, capsys) -> None:
    assert run(models_root, "txt2img", "x", *TINY, "--hires-upscaler", "Magic") == 2
    assert "upscaler 'Magic' not found" in capsys.readouterr().err
    assert run(models_root, "txt2img", "x", *TINY, "--hires-denoise", "3") == 2
    assert "hires denoising_strength" in capsys.readouterr().err
    assert run(models_root, "txt2img", "x", *TINY, "--refiner-switch-at", "0.5") == 2
    assert "--refiner NAME" in capsys.readouterr().err
    assert run(models_root, "txt2img", "x", *TINY, "--refiner", "nope") == 2
    assert "nope" in capsys.readouterr().err
