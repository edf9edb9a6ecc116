"""Latents -> PIL images, as A1111 decodes them (one image at a time, clamp, x255, truncate to uint8)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sdlab.pipeline import lean_vae
from sdlab.pipeline.heap import return_free_heap


def decode_signed(vae: torch.nn.Module, latent: Tensor, scaling_factor: float) -> Tensor:
    """One latent ``[C, h, w]`` -> the VAE's raw output ``[3, H, W]`` float32 (about [-1, 1], unclamped),
    through the lower-memory :func:`sdlab.pipeline.lean_vae.lean_decode` (on CPU, after returning the
    heap's free pages: the decode is a generation's memory peak)."""
    weight = next(vae.parameters())
    dtype = weight.dtype
    if weight.device.type == "cpu":
        return_free_heap()
    with torch.inference_mode():
        return lean_vae.lean_decode(vae, (latent[None] / scaling_factor).to(dtype))[0].float()


def decode_latent(vae: torch.nn.Module, latent: Tensor, scaling_factor: float) -> Tensor:
    """One latent ``[C, h, w]`` -> RGB in [0, 1], ``[3, H, W]`` float32 (A1111 ``decode_first_stage``)."""
    return torch.clamp((decode_signed(vae, latent, scaling_factor) + 1.0) / 2.0, min=0.0, max=1.0)


def to_pil(rgb: Tensor) -> Image.Image:
    """``[3, H, W]`` in [0, 1] -> 8-bit RGB image (A1111: ``255 * x`` then ``astype(uint8)``, which truncates)."""
    array = (255.0 * np.moveaxis(rgb.cpu().numpy(), 0, 2)).astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def decode_batch(vae: torch.nn.Module, latents: Tensor, scaling_factor: float) -> list[Image.Image]:
    """Decode every latent of ``[B, C, h, w]`` separately, so an image never depends on its batch."""
    return [to_pil(decode_latent(vae, latent, scaling_factor)) for latent in latents]
