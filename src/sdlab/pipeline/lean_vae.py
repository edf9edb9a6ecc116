"""A memory-lean VAE decode: diffusers' ``AutoencoderKL.decode`` computed kernel for kernel, with fewer
live intermediates.

At 512x512 the decoder's last blocks hold 128-256 channels of 512x512 float32 (134-268 MB each), and
diffusers' eager forward keeps several of them alive at once: the activation's input next to its output,
``(x + h) / scale`` as two new tensors, a block's input held by its caller. Here SiLU and the residual
run in place and every intermediate is dropped as soon as it is dead. The same kernels see the same
inputs in the same order, so the output is bit-for-bit that of ``vae.decode`` (tested); only the peak
memory changes. Any module this does not recognise is called as it is.

That alone does not lower the peak on CPU: oneDNN copies a convolution's whole input into its blocked
layout first, one more input-sized tensor. So convolutions on inputs above ``BAND_BYTES`` run in row
bands. A band is a smaller convolution, for which oneDNN may choose another kernel: the result then
differs in the last float bits (max 2e-6 relative in a sweep of shapes here; the SD1.5 512x512 decode
came out bit-identical). Below the threshold (every decode of the bundled 64 px model) nothing changes.
Measured (SD1.5 VAE, fp32, 512x512): peak +1.03 GB over the weights with ``vae.decode``, +0.75 GB here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BAND_BYTES = 64 << 20
"""Convolutions on CPU inputs above this size (bytes) run in row bands of about half of it."""


def _bandable(conv: torch.nn.Module, x: Tensor, band_bytes: int | None) -> bool:
    return (
        band_bytes is not None
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.numel() * x.element_size() > band_bytes
        and type(conv) is torch.nn.Conv2d
        and (conv.kernel_size, conv.padding) in (((3, 3), (1, 1)), ((1, 1), (0, 0)))
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def _conv(conv: Any, x: Tensor, band_bytes: int | None) -> Tensor:
    """``conv(x)``; a large CPU 3x3 (or 1x1) convolution runs in row bands of about ``band_bytes / 2``
    (3x3: a 1-row halo, zero rows at the edges) written into one output, so oneDNN's copy of the input
    into its blocked layout is one band, not the whole input. Equal to ``conv(x)`` within float rounding."""
    if not _bandable(conv, x, band_bytes):
        return conv(x)
    assert band_bytes is not None
    batch, channels, height, width = x.shape
    step = max(8, band_bytes // 2 // (batch * channels * width * x.element_size()))
    halo = conv.padding[0]
    out = x.new_empty((batch, conv.out_channels, height, width))
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        band = x[:, :, max(0, r0 - halo) : min(height, r1 + halo)]
        if halo:
            band = F.pad(band, (0, 0, int(r0 == 0), int(r1 == height)))
        out[:, :, r0:r1] = F.conv2d(band, conv.weight, conv.bias, padding=(0, halo))
    return out


def _norm_in_place(norm: Any, x: Tensor, band_bytes: int | None) -> Tensor:
    """``norm(x)`` for a GroupNorm, written over ``x`` (which the caller no longer needs) when ``x`` is a
    large contiguous CPU tensor: a few whole groups of one image at a time, so the only new memory is
    one such slice. Each group's statistics come from the same kernel over the same contiguous data, so
    the result is bit-for-bit ``norm(x)`` (tested)."""
    if not (_bandable_norm(norm, x, band_bytes)):
        return norm(x)
    assert band_bytes is not None
    per_group = x.shape[1] // norm.num_groups
    group_bytes = per_group * x[0, 0].numel() * x.element_size()
    step = max(1, band_bytes // 2 // group_bytes)
    for n in range(x.shape[0]):
        for g0 in range(0, norm.num_groups, step):
            g1 = min(norm.num_groups, g0 + step)
            a, b = g0 * per_group, g1 * per_group
            part = x[n : n + 1, a:b]
            part.copy_(F.group_norm(part, g1 - g0, norm.weight[a:b], norm.bias[a:b], norm.eps))
    return x


def _bandable_norm(norm: Any, x: Tensor, band_bytes: int | None) -> bool:
    return (
        band_bytes is not None
        and type(norm) is torch.nn.GroupNorm
        and norm.affine
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.is_contiguous()
        and x.numel() * x.element_size() > band_bytes
    )


def _is_plain_silu(module: torch.nn.Module) -> bool:
    return type(module) is torch.nn.SiLU


def _plain_resnet(block: torch.nn.Module) -> bool:
    """A ResnetBlock2D without time embedding, resampling or output scaling (every SD/SDXL decoder's)."""
    from diffusers.models.resnet import ResnetBlock2D

    return (
        type(block) is ResnetBlock2D
        and block.upsample is None
        and block.downsample is None
        and block.time_emb_proj is None
        and block.output_scale_factor == 1.0
        and _is_plain_silu(block.nonlinearity)
        and not (block.dropout.training and block.dropout.p > 0)
    )


def _resnet(block: Any, box: list[Tensor], band_bytes: int | None) -> Tensor:
    """``block(x)`` for a plain ResnetBlock2D; ``box`` holds the only reference to ``x`` and is emptied."""
    if not _plain_resnet(block):
        return block(box.pop(), None)
    x = box.pop()
    # the shortcut first: then x is dead after norm1 (diffusers computes it last; it is independent)
    if block.conv_shortcut is None:
        residual, h = x, block.norm1(x)
    else:  # x is dead once the shortcut is computed: normalise it in place
        residual = _conv(block.conv_shortcut, x, band_bytes)
        h = _norm_in_place(block.norm1, x, band_bytes)
    h = F.silu(h, inplace=True)
    del x
    h = _conv(block.conv1, h, band_bytes)
    h = F.silu(_norm_in_place(block.norm2, h, band_bytes), inplace=True)
    h = _conv(block.conv2, h, band_bytes)  # dropout: identity in eval
    # diffusers: (input + hidden) / 1.0; addition commutes bit-for-bit and x / 1.0 is x
    return h.add_(residual)


def _plain_upsampler(up: torch.nn.Module) -> bool:
    from diffusers.models.upsampling import Upsample2D

    return (
        type(up) is Upsample2D
        and up.norm is None
        and not up.use_conv_transpose
        and up.interpolate
        and up.use_conv
        and up.name == "conv"
    )


def _upsample(up: Any, box: list[Tensor], band_bytes: int | None) -> Tensor:
    """``up(x)`` for a nearest x2 + conv Upsample2D, dropping ``x`` before the convolution."""
    if not _plain_upsampler(up):
        return up(box.pop())
    x = box.pop()
    h = F.interpolate(x.contiguous() if x.numel() * 2 > 2**31 else x, scale_factor=2.0, mode="nearest")
    del x
    return _conv(up.conv, h, band_bytes)


def _up_block(block: Any, box: list[Tensor], band_bytes: int | None) -> Tensor:
    from diffusers.models.unets.unet_2d_blocks import UpDecoderBlock2D

    if type(block) is not UpDecoderBlock2D:
        return block(box.pop(), None)
    for resnet in block.resnets:
        box.append(_resnet(resnet, box, band_bytes))
    for up in block.upsamplers or ():
        box.append(_upsample(up, box, band_bytes))
    return box.pop()


def lean_supported(vae: torch.nn.Module) -> bool:
    """Whether ``vae`` is an AutoencoderKL decoded whole (no tiling) with the SD decoder layout."""
    from diffusers import AutoencoderKL
    from diffusers.models.autoencoders.vae import Decoder

    return (
        type(vae) is AutoencoderKL
        and type(vae.decoder) is Decoder
        and not torch.is_grad_enabled()
        and not getattr(vae, "use_tiling", False)
        and not any(hasattr(m, "_hf_hook") for m in vae.modules())  # accelerate offload hooks wrap decode
        and _is_plain_silu(vae.decoder.conv_act)
        and isinstance(vae.decoder.conv_norm_out, torch.nn.GroupNorm)
    )


def lean_decode(vae: Any, z: Tensor, band_bytes: int | None = BAND_BYTES) -> Tensor:
    """``vae.decode(z, return_dict=False)[0]`` for ``z`` ``[B, C, h, w]`` (already divided by the
    scaling factor) with a lower peak memory (bit-identical unless a convolution is banded, see above);
    falls back to ``vae.decode`` for VAEs :func:`lean_supported` rejects. ``band_bytes``: see
    :func:`_conv` (None: no bands). Run it under ``torch.inference_mode()``."""
    if not lean_supported(vae):
        return vae.decode(z, return_dict=False)[0]
    dec = vae.decoder
    x = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    x = dec.conv_in(x)
    box = [dec.mid_block(x, None)]
    del x
    for block in dec.up_blocks:
        box.append(_up_block(block, box, band_bytes))
    x = F.silu(_norm_in_place(dec.conv_norm_out, box.pop(), band_bytes), inplace=True)
    return _conv(dec.conv_out, x, band_bytes)
