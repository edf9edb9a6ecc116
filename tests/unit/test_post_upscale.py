"""Built-in upscalers, A1111 scale arithmetic, tiling geometry and upscaler name resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.models.paths import ModelsDir
from sdlab.post.tiling import Tiling, average_starts, grid_starts, mirror_pad, upscale_average, upscale_grid
from sdlab.post.upscale import (
    available_upscalers,
    check_scale,
    resolve_upscaler,
    target_size,
    upscale_by_steps,
    upscale_image,
)

CPU = torch.device("cpu")


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(("name", "resample"), [("Lanczos", Image.Resampling.LANCZOS), ("nearest", Image.Resampling.NEAREST)])
def test_builtin_resize_equals_pil(tmp_path: Path, name: str, resample: Image.Resampling) -> None:
    img = _image(40, 24)
    out = upscale_image(img, name, 2, models_dir=tmp_path)
    assert out.size == (80, 48)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((80, 48), resample=resample)))


def test_builtin_non_multiple_of_8_takes_a1111_final_lanczos(tmp_path: Path) -> None:
    img = _image(70, 50)
    out = upscale_image(img, "Nearest", 2.5, models_dir=tmp_path)
    # A1111: Nearest to int(70*2.5) x int(50*2.5) = 175x125, then Lanczos to 168x120 (multiples of 8)
    expected = img.resize((175, 125), Image.Resampling.NEAREST).resize((168, 120), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_none_upscaler_only_resizes_to_target(tmp_path: Path) -> None:
    img = _image(30, 20)
    out = upscale_image(img, "None", 1, models_dir=tmp_path)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((24, 16), Image.Resampling.LANCZOS)))


def test_target_size_and_scale_checks() -> None:
    assert target_size(512, 768, 2) == (1024, 1536)
    assert target_size(100, 75, 1.5) == (144, 112)  # 150 -> 144, 112.5 -> 112
    with pytest.raises(InvalidRequestError, match="smaller than 8"):
        target_size(4, 100, 1)
    for bad in (0, -1, float("nan"), float("inf"), 17, True, "2"):
        with pytest.raises(InvalidRequestError):
            check_scale(bad)  # type: ignore[arg-type]


def test_step_loop_stops_after_three_passes() -> None:
    calls: list[tuple[int, int]] = []

    def step(img: Image.Image) -> Image.Image:
        calls.append(img.size)
        return img.resize((img.width + 8, img.height + 8))

    out = upscale_by_steps(_image(16, 16), 16, step)
    assert calls == [(16, 16), (24, 24), (32, 32)] and out.size == (256, 256)


def test_grid_starts_spread_and_flush() -> None:
    assert grid_starts(64, 32, 8) == [0, 16, 32]  # ceil(56 / 24) = 3 tiles, evenly spread
    assert grid_starts(32, 32, 8) == [0]
    starts = grid_starts(1000, 192, 8)
    assert starts[0] == 0 and starts[-1] == 1000 - 192
    assert all(b - a <= 192 - 8 for a, b in zip(starts, starts[1:], strict=False))
    assert average_starts(64, 32, 24) == [0, 24, 32]


def test_mirror_pad_follows_a1111() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = mirror_pad(x, window=4)  # 4 is a multiple: A1111 still adds a whole window
    assert y.shape == (1, 1, 8, 8)
    assert torch.equal(y[..., 4:, :4], torch.flip(x, [2]))


def _pointwise_x2(x: torch.Tensor) -> torch.Tensor:
    """A model whose every output pixel depends on one input pixel: tiling must not change anything."""
    return F.interpolate(torch.sigmoid(3 * x - 1), scale_factor=2, mode="nearest")


@pytest.mark.parametrize("method", [upscale_grid, upscale_average])
@pytest.mark.parametrize(("w", "h", "tile", "overlap"), [(64, 64, 32, 8), (70, 45, 24, 6), (50, 20, 16, 4)])
def test_tiling_is_exact_for_a_pointwise_model(method, w: int, h: int, tile: int, overlap: int) -> None:
    img = _image(w, h, seed=w)
    whole = np.asarray(method(_pointwise_x2, img, Tiling(0, 0), CPU, torch.float32)).astype(int)
    tiled = np.asarray(method(_pointwise_x2, img, Tiling(tile, overlap), CPU, torch.float32)).astype(int)
    assert whole.shape == (2 * h, 2 * w, 3)
    assert np.abs(whole - tiled).max() <= 1  # the average method divides float sums: 1 level at most


def test_tiling_settings_are_validated() -> None:
    with pytest.raises(InvalidRequestError, match="smaller than the tile"):
        Tiling(16, 16)
    with pytest.raises(InvalidRequestError):
        Tiling(-1, 0)


def test_resolution_errors_list_what_exists(tmp_path: Path) -> None:
    models = ModelsDir(tmp_path)
    (tmp_path / "ESRGAN").mkdir()
    (tmp_path / "ESRGAN" / "4x_foo.pth").write_bytes(b"not used")
    (tmp_path / "DAT").mkdir()
    (tmp_path / "DAT" / "4x_foo.safetensors").write_bytes(b"not used")
    assert [r.name for r in available_upscalers(models)] == ["None", "Lanczos", "Nearest", "4x_foo", "4x_foo"]
    with pytest.raises(ModelNotFoundError, match="available: None, Lanczos, Nearest, 4x_foo"):
        resolve_upscaler(models, "4x_bar")
    with pytest.raises(InvalidRequestError, match="ambiguous"):
        resolve_upscaler(models, "4x_foo")
    assert resolve_upscaler(models, "4x_foo.pth").kind == "esrgan"  # the file name decides
    assert resolve_upscaler(models, "LANCZOS").name == "Lanczos"
    with pytest.raises(InvalidRequestError, match="empty"):
        resolve_upscaler(models, " ")
