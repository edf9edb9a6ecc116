"""Model upscalers end to end: tiny random-weight models of each architecture, built with spandrel's
own classes, saved into a temporary A1111 models folder, detected from the file and run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.models.paths import ModelsDir
from sdlab.post.upscale import load_upscaler, resolve_upscaler, upscale_image

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("spandrel") is None,
    reason="spandrel is not installed (the venv needs: pip install --no-deps spandrel==0.4.2)",
)


def _arches() -> dict[str, Callable[[], torch.nn.Module]]:
    from sdlab.post.spandrel_compat import import_spandrel

    import_spandrel()
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.SwinIR import SwinIR

    return {
        "ESRGAN": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
        "Compact": lambda: Compact(num_feat=8, num_conv=2, upscale=4),
        "SwinIR": lambda: SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                                 upsampler="pixelshuffle", mlp_ratio=2.0),
        "HAT": lambda: HAT(img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, upscale=2,
                           num_feat=8, compress_ratio=3, squeeze_factor=4, mlp_ratio=2.0),
        "DAT": lambda: DAT(img_size=16, embed_dim=16, split_size=[2, 4], depth=[1], num_heads=[2],
                           expansion_factor=2.0, upscale=2),
    }  # fmt: skip


# (architecture, A1111 folder, file name, how it is saved, native scale,
#  tiled-vs-untiled tolerance: (max abs, mean abs) in 8-bit levels)
CASES = [
    ("ESRGAN", "ESRGAN", "tiny_esrgan.pth", "plain", 4, (3, 0.1)),
    ("Compact", "RealESRGAN", "tiny_compact.pth", "params_ema", 4, (4, 0.2)),
    ("SwinIR", "SwinIR", "tiny_swinir.pth", "params", 2, (64, 3.0)),
    ("HAT", "HAT", "tiny_hat.safetensors", "safetensors", 2, (12, 0.5)),
    ("DAT", "DAT", "tiny_dat.pth", "plain", 2, (12, 0.5)),
]


def _save(model: torch.nn.Module, path: Path, how: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if how == "safetensors":
        save_file(sd, str(path))
    elif how == "plain":
        torch.save(sd, path)
    else:  # BasicSR style: the weights under "params_ema" / "params"
        torch.save({how: sd}, path)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    arches = _arches()
    torch.manual_seed(0)
    for arch, folder, name, how, _, _ in CASES:
        _save(arches[arch]().eval(), root / folder / name, how)
    return root


def _image(w: int = 64, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth-ish content
    return Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)


@pytest.mark.parametrize(("arch", "folder", "name", "how", "scale", "tol"), CASES, ids=[c[0] for c in CASES])
def test_detect_and_tiled_equals_untiled(models_root: Path, arch: str, folder: str, name: str, how: str,
                                         scale: int, tol: tuple[float, float]) -> None:  # fmt: skip
    ref = resolve_upscaler(ModelsDir(models_root), Path(name).stem)
    assert ref.path == models_root / folder / name
    up = load_upscaler(ref)
    assert up.model.architecture.id == arch
    assert up.native_scale == scale
    img = _image()
    whole = np.asarray(up.upscale(img, scale, tile=0)).astype(int)
    tiled = np.asarray(up.upscale(img, scale, tile=32, overlap=8)).astype(int)
    assert whole.shape == (64 * scale, 64 * scale, 3)
    assert whole.std() > 1.0  # the model does produce an image, not a constant
    diff = np.abs(whole - tiled)
    max_tol, mean_tol = tol
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, (diff.max(), diff.mean())


def test_model_output_matches_direct_call(models_root: Path) -> None:
    """The upscaler gives the model the BGR [0,1] tensor A1111 does and truncates its output to 8 bits."""
    up = load_upscaler(resolve_upscaler(ModelsDir(models_root), "tiny_compact"))
    img = _image(40, 24)
    arr = np.asarray(img)[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    with torch.inference_mode():
        direct = up.model.model(torch.from_numpy(arr.copy())[None]).clamp(0, 1)[0]
    expected = (direct.numpy().transpose(1, 2, 0) * 255.0).astype(np.uint8)[:, :, ::-1]
    got = np.asarray(up.upscale(img, 4, tile=0))
    assert np.array_equal(got, expected)


def test_scale_below_native_resizes_with_lanczos(models_root: Path) -> None:
    up = load_upscaler(resolve_upscaler(ModelsDir(models_root), "tiny_esrgan"))
    img = _image(36, 20)
    native = up.upscale(img, 4, tile=0)  # 144x80, already multiples of 8
    assert native.size == (144, 80)
    half = up.upscale(img, 2, tile=0)  # one 4x pass, then Lanczos down to floor(72/8)*8 x 40
    assert half.size == (72, 40)
    assert np.array_equal(np.asarray(half), np.asarray(native.resize((72, 40), Image.Resampling.LANCZOS)))


def test_scale_above_native_runs_twice(models_root: Path) -> None:
    up = load_upscaler(resolve_upscaler(ModelsDir(models_root), "tiny_dat"))  # native 2x
    img = _image(16, 16)
    twice = up.upscale(up.upscale(img, 2, tile=0), 2, tile=0)
    out = up.upscale(img, 3, tile=0)  # 2x (32 < 48) then 4x (64), then Lanczos to 48
    assert out.size == (48, 48)
    assert np.array_equal(np.asarray(out), np.asarray(twice.resize((48, 48), Image.Resampling.LANCZOS)))


def test_upscale_image_api_and_a1111_name(models_root: Path, tmp_path: Path) -> None:
    rdir = tmp_path / "RealESRGAN"
    rdir.mkdir()
    (rdir / "RealESRGAN_x4plus.pth").write_bytes((models_root / "RealESRGAN" / "tiny_compact.pth").read_bytes())
    out = upscale_image(_image(32, 32), "R-ESRGAN 4x+", 2, models_dir=tmp_path, device="cpu", tile=16)
    assert out.size == (64, 64) and out.mode == "RGB"
    with pytest.raises(ModelNotFoundError, match="R-ESRGAN 4x\\+ Anime6B|RealESRGAN_x4plus_anime_6B"):
        upscale_image(_image(), "R-ESRGAN 4x+ Anime6B", 2, models_dir=tmp_path, device="cpu", tile=0)


def test_rgba_input_is_upscaled_as_rgb(models_root: Path) -> None:
    img = _image(32, 32).convert("RGBA")
    out = upscale_image(img, "tiny_compact", 4, models_dir=models_root, device="cpu", tile=0)
    ref = upscale_image(img.convert("RGB"), "tiny_compact", 4, models_dir=models_root, device="cpu", tile=0)
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(ref))


def test_bad_tile_settings(models_root: Path) -> None:
    with pytest.raises(InvalidRequestError, match="overlap"):
        upscale_image(_image(), "tiny_compact", 2, models_dir=models_root, device="cpu", tile=8, overlap=8)


def test_cli_upscale_subprocess(models_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    _image(40, 32).save(src)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "sdlab.cli.main", "--models-dir", str(models_root), "--device", "cpu",
           "upscale", str(src), "--upscaler", "tiny_compact", "--scale", "2", "--tile", "16", "--out", str(out_dir)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.strip().splitlines()[-1])
    assert written.parent == out_dir and Image.open(written).size == (80, 64)
    bad = subprocess.run(cmd[:-6] + ["--upscaler", "missing", "--out", str(out_dir)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "upscaler 'missing' not found" in bad.stderr and "tiny_compact" in bad.stderr
