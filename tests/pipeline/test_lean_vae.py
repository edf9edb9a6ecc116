"""The lean VAE decode equals diffusers' ``AutoencoderKL.decode``: bit for bit without convolution bands,
within float rounding with them (forced small here; by default only inputs over 64 MB are banded)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from sdlab.pipeline import lean_vae


def _vae(dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    torch.manual_seed(0)
    # (32, 64, 64): resnets with and without a 1x1 shortcut, two nearest x2 + conv upsamplers
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), norm_num_groups=32, sample_size=64,
    )
    with torch.no_grad():  # default init leaves the output near zero: give the decoder some range
        for p in vae.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae.to(dtype).eval().requires_grad_(False)


def _latent(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3)).to(dtype)


@pytest.mark.parametrize("band_bytes", [None, lean_vae.BAND_BYTES, 4096, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_decode_equals_diffusers(band_bytes: int | None, dtype: torch.dtype) -> None:
    vae, z = _vae(dtype), _latent(dtype)
    assert lean_vae.lean_supported(vae) is False  # grad mode on: only under inference_mode
    with torch.inference_mode():
        assert lean_vae.lean_supported(vae)
        expected = vae.decode(z, return_dict=False)[0]
        got = lean_vae.lean_decode(vae, z, band_bytes=band_bytes)
    assert got.dtype == expected.dtype and got.shape == (1, 3, 64, 64)
    assert expected.float().std() > 0.05
    if band_bytes in (None, lean_vae.BAND_BYTES):  # no band at this size: the same kernels on the same inputs
        assert torch.equal(got, expected)
    else:  # a band is a smaller convolution, for which oneDNN may pick another kernel
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        assert (got.float() - expected.float()).abs().max() <= tolerance


def test_banded_convolutions_are_used_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """With 1-byte bands every 3x3 and 1x1 convolution of the up path runs in 8-row bands."""
    vae, z = _vae(), _latent()
    calls: list[tuple[int, ...]] = []
    conv2d = torch.nn.functional.conv2d

    def spy(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(lean_vae.F, "conv2d", spy)
    with torch.inference_mode():
        lean_vae.lean_decode(vae, z, band_bytes=1)
    # 32 and 64 rows in bands of 8: a 3x3 band carries a 1-row halo (zero-padded at the edges), 10
    # rows; a 1x1 band is 8. Only the 16x16 convolutions before the first upsampler are whole.
    rows = [shape[2] for shape in calls]
    assert {8, 10} <= set(rows) <= {8, 10, 16}
    assert rows.count(10) >= 6 * 4 + 6 * 8  # the 3x3 convolutions of two up blocks' resnets alone


@pytest.mark.parametrize("kernel,padding,stride", [(3, 1, 1), (1, 0, 1), (3, 1, 2), (5, 2, 1)])
def test_conv_bands_equal_the_module(kernel: int, padding: int, stride: int) -> None:
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(16, 8, kernel, stride=stride, padding=padding).eval()
    x = torch.randn(2, 16, 37, 23)
    with torch.inference_mode():
        got, expected = lean_vae._conv(conv, x, band_bytes=1), conv(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_unsupported_vaes_fall_back_to_diffusers() -> None:
    vae, z = _vae(), _latent()
    vae.enable_tiling()
    with torch.inference_mode():
        assert not lean_vae.lean_supported(vae)
        assert torch.equal(lean_vae.lean_decode(vae, z), vae.decode(z, return_dict=False)[0])


@pytest.mark.parametrize("shape,groups", [((1, 64, 19, 13), 32), ((2, 32, 8, 8), 8), ((3, 16, 5, 7), 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_in_place_is_bit_exact(shape: tuple[int, ...], groups: int, dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    norm = torch.nn.GroupNorm(groups, shape[1], eps=1e-6).to(dtype).eval()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 * torch.randn(shape) + 1).to(dtype)
    with torch.inference_mode():
        expected = norm(x)
        got = lean_vae._norm_in_place(norm, x, band_bytes=1)  # 1 byte: one group at a time
    assert got.data_ptr() == x.data_ptr()  # written over its input
    assert torch.equal(got, expected)


def test_in_place_norms_leave_the_decode_bit_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every GroupNorm the decode may overwrite its input with does so (1-byte threshold), convolutions
    whole: the image is exactly diffusers'."""
    vae, z = _vae(), _latent()
    monkeypatch.setattr(lean_vae, "_bandable", lambda *args: False)
    used: list[int] = []
    norm_in_place = lean_vae._norm_in_place

    def spy(norm: torch.nn.Module, x: torch.Tensor, band_bytes: int | None) -> torch.Tensor:
        used.append(int(lean_vae._bandable_norm(norm, x, band_bytes)))
        return norm_in_place(norm, x, band_bytes)

    monkeypatch.setattr(lean_vae, "_norm_in_place", spy)
    with torch.inference_mode():
        expected = vae.decode(z, return_dict=False)[0]
        got = lean_vae.lean_decode(vae, z, band_bytes=1)
    assert sum(used) >= 10  # norm2 of every up-path resnet, norm1 behind each shortcut, conv_norm_out
    assert torch.equal(got, expected)
