"""Running an image model over tiles, as A1111 v1.10.1 does, so memory stays bounded.

Two methods, one per A1111 code path:

* ``grid`` (ESRGAN, Real-ESRGAN, HAT, DAT): A1111's ``images.split_grid`` / ``combine_grid``. Tiles of
  ``tile x tile`` px are spread evenly over the image so neighbours overlap by at least ``overlap`` px;
  each output tile is converted to 8 bits, and neighbours are blended over the first
  ``overlap * scale`` px of each tile with a linear ramp (0..255 mask), first along rows then columns.
  Peak memory: the 8-bit output image plus one tile through the model.
* ``average`` (SwinIR): A1111's ``tiled_upscale_2``: tiles at stride ``tile - overlap``, outputs
  summed in float and divided by how many tiles covered each pixel. The input is first extended to
  the next multiple of 8 px (plus 8 when already a multiple) by mirroring, as A1111 does.
  Peak memory: one float32 output accumulator plus one tile.

Pixels enter the model as A1111 feeds them: BGR channel order, ``uint8 / 255`` in float; outputs are
clamped to [0, 1] and truncated (not rounded) to 8 bits, then flipped back to RGB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sdlab.errors import InvalidRequestError, OutOfMemoryError
from sdlab.registry import Registry

ModelFn = Callable[[torch.Tensor], torch.Tensor]
"""A model: ``(1, 3, h, w)`` float in [0, 1] -> ``(1, 3, h*s, w*s)`` on the same device and dtype."""


@dataclass(frozen=True)
class Tiling:
    """Tile edge and overlap in input pixels; ``tile == 0`` runs the whole image at once."""

    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile < 0 or self.overlap < 0:
            raise InvalidRequestError(f"tile ({self.tile}) and tile overlap ({self.overlap}) must be >= 0")
        if self.tile and self.overlap >= self.tile:
            raise InvalidRequestError(f"tile overlap ({self.overlap}) must be smaller than the tile ({self.tile})")


# --------------------------------------------------------------------------------------------------
# pixels <-> tensors (A1111 channel order and quantisation)


def image_to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """RGB image -> ``(1, 3, H, W)`` BGR tensor in [0, 1] (A1111's ``upscale_without_tiling`` input)."""
    arr = np.asarray(image.convert("RGB"))[:, :, ::-1]
    chw = np.ascontiguousarray(np.transpose(arr, (2, 0, 1)), dtype=np.float32) / 255.0
    return torch.from_numpy(chw).unsqueeze(0).to(device=device, dtype=dtype)


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` BGR tensor -> ``(H, W, 3)`` RGB uint8: clamp to [0, 1], x255, truncate."""
    out = tensor.squeeze(0).float().cpu().clamp(0, 1).numpy()
    return np.ascontiguousarray((255.0 * np.moveaxis(out, 0, 2)).astype(np.uint8)[:, :, ::-1])


def run_model(model: ModelFn, image: Image.Image, device: torch.device, dtype: torch.dtype) -> Image.Image:
    """One untiled pass of ``model`` over ``image`` (RGB in, RGB out)."""
    with torch.inference_mode():
        try:
            out = model(image_to_tensor(image, device, dtype))
        except torch.cuda.OutOfMemoryError:
            raise OutOfMemoryError(
                f"out of device memory upscaling a {image.width}x{image.height} tile; use a smaller --tile"
            ) from None
    return Image.fromarray(tensor_to_array(out), "RGB")


# --------------------------------------------------------------------------------------------------
# grid method (A1111 images.split_grid / combine_grid)


def grid_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis: evenly spread, the last one flush with the end.

    ``tile`` must not exceed ``length``.
    """
    count = max(1, math.ceil((length - overlap) / (tile - overlap)))
    step = (length - tile) / (count - 1) if count > 1 else 0.0
    return [min(int(i * step), length - tile) for i in range(count)]


def _ramp(overlap: int, along_x: bool, size: int) -> Image.Image:
    ramp = (np.arange(overlap, dtype=np.float32) * 255.0 / overlap).astype(np.uint8)
    arr = np.repeat(ramp[None, :], size, axis=0) if along_x else np.repeat(ramp[:, None], size, axis=1)
    return Image.fromarray(arr, "L")


def _blend_paste(dest: Image.Image, piece: Image.Image, at: int, overlap: int, along_x: bool) -> None:
    """Paste ``piece`` at offset ``at`` (x or y); its first ``overlap`` px fade in over what is there."""
    if at == 0 or overlap == 0:
        dest.paste(piece, (at, 0) if along_x else (0, at))
        return
    if along_x:
        dest.paste(piece.crop((0, 0, overlap, piece.height)), (at, 0), mask=_ramp(overlap, True, piece.height))
        dest.paste(piece.crop((overlap, 0, piece.width, piece.height)), (at + overlap, 0))
    else:
        dest.paste(piece.crop((0, 0, piece.width, overlap)), (0, at), mask=_ramp(overlap, False, piece.width))
        dest.paste(piece.crop((0, overlap, piece.width, piece.height)), (0, at + overlap))


def upscale_grid(model: ModelFn, image: Image.Image, tiling: Tiling, device: torch.device,
                 dtype: torch.dtype) -> Image.Image:  # fmt: skip
    """A1111's grid tiling (see module doc). Tiles are clipped to the image when it is smaller."""
    w, h = image.size
    if tiling.tile == 0 or (w <= tiling.tile and h <= tiling.tile):
        return run_model(model, image, device, dtype)
    tw, th = min(tiling.tile, w), min(tiling.tile, h)
    overlap = min(tiling.overlap, tw - 1, th - 1)
    xs, ys = grid_starts(w, tw, overlap), grid_starts(h, th, overlap)
    combined: Image.Image | None = None
    scale = 0
    for y in ys:
        row: Image.Image | None = None
        for x in xs:
            out = run_model(model, image.crop((x, y, x + tw, y + th)), device, dtype)
            scale = scale or out.width // tw
            if row is None:
                row = Image.new("RGB", (w * scale, out.height))
            _blend_paste(row, out, x * scale, overlap * scale, along_x=True)
        if combined is None:
            combined = Image.new("RGB", (w * scale, h * scale))
        assert row is not None
        _blend_paste(combined, row, y * scale, overlap * scale, along_x=False)
    assert combined is not None
    return combined


# --------------------------------------------------------------------------------------------------
# average method (A1111 tiled_upscale_2, used for SwinIR)


WINDOW = 8  # A1111 pads SwinIR inputs to a multiple of this (the SwinIR window size)


def mirror_pad(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Extend ``(1, C, H, W)`` at the bottom/right by mirroring to ``(H // window + 1) * window`` (same for W)."""
    h, w = x.shape[-2:]
    hp, wp = (h // window + 1) * window, (w // window + 1) * window
    x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :hp, :]
    return torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :wp]


def average_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts at ``stride`` steps, plus one flush with the end (A1111 ``tiled_upscale_2``)."""
    return list(range(0, length - tile, stride)) + [length - tile]


def upscale_average(model: ModelFn, image: Image.Image, tiling: Tiling, device: torch.device,
                    dtype: torch.dtype) -> Image.Image:  # fmt: skip
    """A1111's SwinIR tiling (see module doc)."""
    w, h = image.size
    with torch.inference_mode():
        x = mirror_pad(image_to_tensor(image, device, dtype))
        ph, pw = x.shape[-2:]
        tile = min(tiling.tile, ph, pw)
        try:
            if tile <= 0:
                out = model(x)
            else:
                out = _average_tiles(model, x, tile, tiling.overlap)
        except torch.cuda.OutOfMemoryError:
            raise OutOfMemoryError(f"out of device memory upscaling a {w}x{h} image; use a smaller --tile") from None
        scale = out.shape[-1] // pw
        return Image.fromarray(tensor_to_array(out[..., : h * scale, : w * scale]), "RGB")


def _average_tiles(model: ModelFn, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    ph, pw = x.shape[-2:]
    stride = max(1, tile - overlap)
    ys, xs = average_starts(ph, tile, stride), average_starts(pw, tile, stride)
    result: torch.Tensor | None = None
    for y in ys:
        for x0 in xs:
            out = model(x[..., y : y + tile, x0 : x0 + tile])
            s = out.shape[-1] // tile
            if result is None:
                result = torch.zeros((1, out.shape[1], ph * s, pw * s), dtype=out.dtype, device=out.device)
            result[..., y * s : (y + tile) * s, x0 * s : (x0 + tile) * s].add_(out)
    assert result is not None
    s = result.shape[-1] // pw
    count_y = torch.zeros(ph * s, dtype=result.dtype, device=result.device)
    count_x = torch.zeros(pw * s, dtype=result.dtype, device=result.device)
    for y in ys:
        count_y[y * s : (y + tile) * s] += 1
    for x0 in xs:
        count_x[x0 * s : (x0 + tile) * s] += 1
    return result.div_(count_y[:, None] * count_x[None, :])  # every (y, x) tile pair is visited


TileMethod = Callable[[ModelFn, Image.Image, Tiling, torch.device, torch.dtype], Image.Image]

TILE_METHODS: Registry[TileMethod] = Registry.of("tiling method", [("grid", upscale_grid), ("average", upscale_average)])
