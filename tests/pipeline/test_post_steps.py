"""Post steps of a generation: upscale (A1111 extras keys appended) and face-restoration plumbing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlab.engine import Engine
from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.infotext import parse_infotext
from sdlab.types import GenerationRequest, PostSteps

BASE = GenerationRequest(prompt="a red circle", width=32, height=32, steps=2, sampler="Euler", seed=9, model="tiny-sd1")


def test_upscale_post_step_resizes_and_records_itself(engine: Engine, tmp_path) -> None:
    plain = engine.generate(BASE).images[0]
    result = engine.generate(BASE.replace(post=PostSteps(upscaler="Lanczos", upscale_by=2)))
    image = result.images[0].image
    assert image.size == (64, 64)
    expected = plain.image.resize((64, 64), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    params = parse_infotext(result.images[0].infotext)
    assert params["Postprocess upscale by"] == "2" and params["Postprocess upscaler"] == "Lanczos"
    again = engine.request_from_infotext(result.images[0].infotext)
    assert again.post == PostSteps(upscaler="Lanczos", upscale_by=2.0)


def test_bad_post_steps_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequestError, match="visibility"):
        engine.generate(BASE.replace(post=PostSteps(face_restoration="GFPGAN", visibility=2.0)))
    with pytest.raises(ModelNotFoundError):
        engine.generate(BASE.replace(post=PostSteps(face_restoration="GFPGAN")))  # no GFPGAN/ file
    with pytest.raises(InvalidRequestError, match="licence"):
        engine.generate(BASE.replace(post=PostSteps(face_restoration="CodeFormer")))


def test_cli_upscale_option(models_root, tmp_path, capsys) -> None:
    from sdlab.cli.main import main

    argv = ["--models-dir", str(models_root), "txt2img", "x", "--model", "tiny-sd1", "--width", "32", "--height", "32",
            "--steps", "2", "--seed", "1", "--upscale", "Nearest", "--upscale-by", "1.5", "--out", str(tmp_path)]
    assert main(argv) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert Image.open(path).size == (48, 48)
