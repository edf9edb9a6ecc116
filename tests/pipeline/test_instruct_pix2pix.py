"""instruct-pix2pix img2img (A1111 edit models): the image latent as extra channels, the three-pass image
CFG, "Image CFG scale" in the infotext and back, on a tiny random 8-channel checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.tiny_checkpoints import make_tiny_checkpoint
from PIL import Image

from sdlab.engine import Engine
from sdlab.infotext import parse_infotext
from sdlab.pipeline.images import encode_signed, to_tensor
from sdlab.types import GenerationRequest

BASE = GenerationRequest(prompt="make it red", negative_prompt="blurry", width=64, height=64, steps=3,
                         sampler="Euler", seed=5, model="tiny-ip2p", denoising_strength=0.8)


@pytest.fixture(scope="module")
def ip2p(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = tmp_path_factory.mktemp("ip2p-models") / "Stable-diffusion"
    folder.mkdir()
    make_tiny_checkpoint(folder / "tiny-ip2p.safetensors", "sd1", "instruct-pix2pix", seed=5)
    return Engine(models_dir=folder.parent, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    x = np.linspace(0, 255, 64)
    rgb = np.stack([np.broadcast_to(x, (64, 64)), np.full((64, 64), 60.0), np.broadcast_to(x[:, None], (64, 64))], 2)
    return Image.fromarray(rgb.astype(np.uint8))


class UNetSpy:
    """Records the extra input channels (beyond the latent's 4) of every UNet call."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.extra: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(lambda m, args: self.extra.append(args[0][:, 4:].clone()))


def _spy(engine: Engine, request: GenerationRequest) -> tuple[list[torch.Tensor], object]:
    spy = UNetSpy(engine.load("tiny-ip2p").unet)
    try:
        out = engine.generate(request)
    finally:
        spy.handle.remove()
    return spy.extra, out


def test_image_cfg_runs_three_passes_with_the_unscaled_image_latent(ip2p: Engine, init_image: Image.Image) -> None:
    model = ip2p.load("tiny-ip2p")
    edit = encode_signed(model.vae, 2 * to_tensor([init_image]) - 1, 1.0)
    extra, out = _spy(ip2p, BASE.replace(init_images=(init_image,), image_cfg_scale=1.5))
    assert len(extra) == 3  # Euler at strength 0.8 of 3 steps: 3 calls
    for call in extra:
        assert call.shape == (3, *edit.shape[1:])  # text + image, image only, neither
        torch.testing.assert_close(call[:2], edit.expand(2, -1, -1, -1), rtol=0, atol=1e-6)
        assert torch.count_nonzero(call[2]) == 0
    assert parse_infotext(out.images[0].infotext)["Image CFG scale"] == "1.5"


@pytest.mark.parametrize("scale", [None, 1.0])
def test_image_cfg_1_or_unset_is_plain_cfg_with_the_image(ip2p: Engine, init_image: Image.Image,
                                                         scale: float | None) -> None:
    extra, out = _spy(ip2p, BASE.replace(init_images=(init_image,), image_cfg_scale=scale))
    assert all(call.shape[0] == 2 and torch.count_nonzero(call) == call.numel() for call in extra)
    params = parse_infotext(out.images[0].infotext)
    # A1111 writes the value whenever an edit model's img2img has one, 1.0 included
    assert params.get("Image CFG scale") == (None if scale is None else "1.0")


def test_image_cfg_changes_the_image_and_round_trips(ip2p: Engine, init_image: Image.Image, tmp_path: Path) -> None:
    request = BASE.replace(init_images=(init_image,))
    plain = np.asarray(ip2p.generate(request).images[0].image)
    first = ip2p.generate(request.replace(image_cfg_scale=2.5))
    assert not np.array_equal(plain, np.asarray(first.images[0].image))
    info = first.images[0].infotext
    assert "CFG scale: 7.0, Image CFG scale: 2.5, Seed: 5" in info  # A1111's order
    again = ip2p.request_from_image(ip2p.save(first, tmp_path)[0].path)
    assert again.image_cfg_scale == 2.5
    second = ip2p.generate(again.replace(init_images=(init_image,)))
    assert second.images[0].infotext == info
    assert np.array_equal(np.asarray(first.images[0].image), np.asarray(second.images[0].image))


def test_txt2img_on_an_edit_model_has_no_image_cfg(ip2p: Engine) -> None:
    out = ip2p.generate(BASE.replace(image_cfg_scale=1.5))
    assert "Image CFG scale" not in parse_infotext(out.images[0].infotext)


def test_cli_image_cfg_reaches_the_infotext(ip2p: Engine, init_image: Image.Image, tmp_path: Path, capsys) -> None:
    from sdlab.cli.main import main
    from sdlab.outputs import read_infotext

    source = tmp_path / "in.png"
    init_image.save(source)
    code = main(["--models-dir", str(ip2p.models_dir.root), "--device", "cpu", "img2img", str(source), "make it red",
                 "--model", "tiny-ip2p", "--steps", "2", "--image-cfg", "1.25", "--out", str(tmp_path / "out")])
    assert code == 0
    written = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert parse_infotext(read_infotext(written))["Image CFG scale"] == "1.25"
