"""Face restoration: crop geometry, paste-back, A1111 visibility blending, detector and model errors."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.errors import InvalidRequestError, ModelNotFoundError, UnsupportedModelError
from sdlab.post import face
from sdlab.post.face import FaceBox, FaceRestorer, RestorerKind, crop_matrix, restore_faces, restore_faces_array

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="opencv-python-headless not installed")
needs_spandrel = pytest.mark.skipif(importlib.util.find_spec("spandrel") is None, reason="spandrel not installed")


def _image(w: int = 160, h: int = 120) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


class _Negate(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [-1, 1] in, [-1, 1] out
        return -x


def _fake_restorer() -> FaceRestorer:
    kind = RestorerKind("Fake", "gfpgan", "Fake", "fake", lambda net, x, w: net(x), False)
    return FaceRestorer(kind, Path("fake.pth"), _Negate(), torch.device("cpu"), torch.float32)


def test_crop_matrix_frames_the_face_like_ffhq() -> None:
    box = FaceBox(100, 50, 64, 64)
    m = crop_matrix(box)
    centre = m @ np.array([132.0, 82.0, 1.0])  # box centre -> nose position of the template
    assert np.allclose(centre, [256.0, 256.0 + 0.113 * 512])
    assert m[0, 0] == pytest.approx(512 / 128)  # the crop is twice the face width
    assert m[0, 1] == 0 and m[1, 0] == 0


@needs_cv2
def test_paste_back_changes_the_face_only() -> None:
    rgb = np.asarray(_image())
    box = FaceBox(60, 40, 30, 30)
    out = restore_faces_array(rgb, lambda crop: np.full_like(crop, 7), [box])
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[55, 75] == 7).all()  # centre of the face: the restored crop
    assert np.array_equal(out[:, :5], rgb[:, :5])  # far from the crop: untouched
    assert np.array_equal(restore_faces_array(rgb, lambda c: c, []), rgb)


@needs_cv2
def test_visibility_blends_as_a1111() -> None:
    img, restorer, boxes = _image(), _fake_restorer(), [FaceBox(60, 40, 30, 30)]
    full = restore_faces(img, restorer, visibility=1.0, boxes=boxes)
    assert np.asarray(full)[55, 75].tolist() != np.asarray(img)[55, 75].tolist()
    half = restore_faces(img, restorer, visibility=0.5, boxes=boxes)
    assert np.array_equal(np.asarray(half), np.asarray(Image.blend(img, full, 0.5)))
    assert np.array_equal(np.asarray(restore_faces(img, restorer, visibility=0.0, boxes=boxes)), np.asarray(img))
    with pytest.raises(InvalidRequestError, match="visibility"):
        restore_faces(img, restorer, visibility=1.5)


def test_restore_crop_uses_a1111_normalisation() -> None:
    crop = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = _fake_restorer().restore_crop(crop, 0.5)
    expected = (((-(crop / 255.0 - 0.5) / 0.5).clip(-1, 1) + 1) / 2 * 255.0).astype(np.uint8)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1  # float32 vs float64 truncation


@needs_cv2
def test_no_face_leaves_the_image_unchanged() -> None:
    img = Image.new("RGB", (128, 96), (90, 120, 150))
    assert face.detect_faces(np.asarray(img)) == []
    assert np.array_equal(np.asarray(restore_faces(img, _fake_restorer())), np.asarray(img))


@needs_cv2
def test_absent_detector_weights_are_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cv2

    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + os.sep)
    with pytest.raises(UnsupportedModelError, match="haarcascade_frontalface_default.xml are absent.*pip install"):
        face.detect_faces(np.zeros((32, 32, 3), np.uint8))


def test_missing_opencv_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UnsupportedModelError, match="opencv-python-headless"):
        face.detect_faces(np.zeros((32, 32, 3), np.uint8))


def test_codeformer_needs_consent_and_gfpgan_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="non-commercial"):
        face.load_face_restorer("CodeFormer", tmp_path)
    with pytest.raises(ModelNotFoundError, match="no GFPGAN model"):
        face.load_face_restorer("GFPGAN", tmp_path)
    with pytest.raises(InvalidRequestError, match="face restorer"):
        face.load_face_restorer("RestoreAll", tmp_path)


@needs_spandrel
def test_wrong_architecture_in_the_gfpgan_folder(tmp_path: Path) -> None:
    from sdlab.post.spandrel_compat import import_spandrel

    import_spandrel()
    from spandrel.architectures.Compact import Compact

    (tmp_path / "GFPGAN").mkdir()
    torch.save(Compact(num_feat=4, num_conv=1, upscale=2).state_dict(), tmp_path / "GFPGAN" / "GFPGANv1.4.pth")
    with pytest.raises(UnsupportedModelError, match="not GFPGAN"):
        face.load_face_restorer("GFPGAN", tmp_path)


@needs_spandrel
@pytest.mark.skipif(not os.environ.get("SDLAB_SLOW_TESTS"), reason="full-size GFPGAN (86M params): SDLAB_SLOW_TESTS=1")
def test_gfpgan_random_weights_detected_and_run(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from sdlab.post.spandrel_compat import import_spandrel

    import_spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)  # fmt: skip
    (tmp_path / "GFPGAN").mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "GFPGAN" / "GFPGANv1.4.safetensors"))
    restorer = face.load_face_restorer("GFPGAN", tmp_path)
    assert restorer.kind.name == "GFPGAN"
    img = _image(200, 160)
    out = restore_faces(img, restorer, visibility=1.0, boxes=[FaceBox(70, 50, 60, 60)])
    assert out.size == img.size and not np.array_equal(np.asarray(out), np.asarray(img))


@needs_spandrel
@pytest.mark.skipif(importlib.util.find_spec("spandrel_extra_arches") is None, reason="spandrel_extra_arches not installed")
@pytest.mark.skipif(not os.environ.get("SDLAB_SLOW_TESTS"), reason="CodeFormer's fixed 512px VQ backbone: SDLAB_SLOW_TESTS=1")
def test_codeformer_random_weights_with_consent(tmp_path: Path) -> None:
    from sdlab.post.spandrel_compat import import_extra_arches

    import_extra_arches()
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256, connect_list=["32"])
    (tmp_path / "Codeformer").mkdir()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "Codeformer" / "codeformer-v0.1.0.pth")
    restorer = face.load_face_restorer("CodeFormer", tmp_path, allow_noncommercial=True)
    assert restorer.kind.name == "CodeFormer"
    crop = np.asarray(_image(512, 512))
    strong, faithful = restorer.restore_crop(crop, 0.0), restorer.restore_crop(crop, 1.0)
    assert strong.shape == (512, 512, 3) and not np.array_equal(strong, faithful)  # the weight reaches the net


def test_cli_restore_faces_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sdlab.cli.main import main

    src = tmp_path / "in.png"
    _image(32, 32).save(src)
    base = ["--models-dir", str(tmp_path), "--device", "cpu", "restore-faces", str(src), "--out", str(tmp_path / "o")]
    assert main(base) == 2 and "no GFPGAN model" in capsys.readouterr().err
    assert main(base + ["--restorer", "CodeFormer"]) == 2 and "--allow-noncommercial" in capsys.readouterr().err
