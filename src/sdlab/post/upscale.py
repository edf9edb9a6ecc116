"""Upscalers as A1111 v1.10.1 runs them: None, Lanczos, Nearest, and model files detected by spandrel.

Scale handling (A1111 ``Upscaler.upscale``): the target is ``floor(W * scale / 8) * 8`` by
``floor(H * scale / 8) * 8``. The upscaler's own step (a resize by ``scale`` for Lanczos/Nearest, one
pass at the model's native scale for a model) runs up to 3 times, stopping when the size no longer
changes or reaches the target; a final Lanczos resize then gives exactly the target size. So a 4x
model asked for 2x runs once and is resized down; asked for 8x it runs twice (16x) and is resized.

Model names resolve in the models folder: a file stem / name / relative path in ``ESRGAN/``,
``RealESRGAN/``, ``SwinIR/``, ``DAT/`` or ``HAT/`` (A1111's ``friendly_name`` is the stem), or one of
A1111's built-in names (``R-ESRGAN 4x+`` -> ``RealESRGAN/RealESRGAN_x4plus.pth``...), which sdlab never
downloads: the file must be there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.models.paths import ModelsDir, list_models, resolve_model
from sdlab.post.images import to_rgb
from sdlab.post.loading import load_model
from sdlab.post.tiling import TILE_METHODS, Tiling
from sdlab.registry import Registry

MAX_SCALE = 16.0
MAX_PASSES = 3  # A1111 runs an upscaler at most three times per request
LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


@dataclass(frozen=True)
class ModelFolder:
    """A models-folder kind holding upscaler files, with A1111's tiling method and defaults for it."""

    kind: str  # a sdlab.models.paths kind
    tiling: str  # a name in sdlab.post.tiling.TILE_METHODS
    tile: int = 192  # px; A1111's ESRGAN_tile / SWIN_tile / DAT_tile default
    overlap: int = 8  # px; A1111's *_tile_overlap default


MODEL_FOLDERS: Registry[ModelFolder] = Registry.of(
    "upscaler folder",
    [
        ("esrgan", ModelFolder("esrgan", "grid")),
        ("realesrgan", ModelFolder("realesrgan", "grid")),
        ("swinir", ModelFolder("swinir", "average")),
        ("dat", ModelFolder("dat", "grid")),
        ("hat", ModelFolder("hat", "grid")),
    ],
)

#: A1111's built-in model upscaler names -> (folder kind, file stem). Only files already present are used.
A1111_NAMES: Registry[tuple[str, str]] = Registry.of(
    "A1111 upscaler name",
    [
        ("ESRGAN_4x", ("esrgan", "ESRGAN_4x")),
        ("R-ESRGAN 4x+", ("realesrgan", "RealESRGAN_x4plus")),
        ("R-ESRGAN 4x+ Anime6B", ("realesrgan", "RealESRGAN_x4plus_anime_6B")),
        ("R-ESRGAN 2x+", ("realesrgan", "RealESRGAN_x2plus")),
        ("R-ESRGAN General 4xV3", ("realesrgan", "realesr-general-x4v3")),
        ("R-ESRGAN General WDN 4xV3", ("realesrgan", "realesr-general-wdn-x4v3")),
        ("R-ESRGAN AnimeVideo", ("realesrgan", "realesr-animevideov3")),
        ("SwinIR 4x", ("swinir", "SwinIR_4x")),
        ("DAT x2", ("dat", "DAT_x2")),
        ("DAT x3", ("dat", "DAT_x3")),
        ("DAT x4", ("dat", "DAT_x4")),
    ],
)

#: for a file given by full path: the folder (so the tiling) A1111 would use for its architecture id
ARCH_FOLDERS = {"SwinIR": "swinir", "DAT": "dat", "HAT": "hat", "Compact": "realesrgan"}

Step = Callable[[Image.Image], Image.Image]


# --------------------------------------------------------------------------------------------------
# scale arithmetic


def check_scale(scale: float) -> float:
    """``scale`` as a float in (0, MAX_SCALE]; InvalidRequestError otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidRequestError(f"upscale factor must be a number, got {scale!r}")
    if not 0 < scale <= MAX_SCALE:
        raise InvalidRequestError(f"upscale factor must be in (0, {MAX_SCALE:g}], got {scale:g}")
    return float(scale)


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's destination size: each side ``floor(side * scale / 8) * 8`` px (must be >= 8)."""
    dest = (int((width * scale) // 8 * 8), int((height * scale) // 8 * 8))
    if min(dest) < 8:
        raise InvalidRequestError(
            f"{width}x{height} scaled by {scale:g} is smaller than 8 px on a side; use a larger factor"
        )
    return dest


def upscale_by_steps(image: Image.Image, scale: float, step: Step) -> Image.Image:
    """A1111's ``Upscaler.upscale`` loop around one upscaler ``step`` (see module doc)."""
    dest = target_size(image.width, image.height, scale)
    for _ in range(MAX_PASSES):
        before = image.size
        image = step(image)
        if image.size == before or (image.width >= dest[0] and image.height >= dest[1]):
            break
    return image if image.size == dest else image.resize(dest, resample=LANCZOS)


def _resize_step(scale: float, resample: Image.Resampling) -> Step:
    return lambda img: img.resize((int(img.width * scale), int(img.height * scale)), resample=resample)


# --------------------------------------------------------------------------------------------------
# upscalers


@dataclass(frozen=True)
class Builtin:
    """An upscaler without weights: a step factory from the requested scale (None: no step)."""

    name: str
    resample: Image.Resampling | None


BUILTINS: Registry[Builtin] = Registry.of(
    "built-in upscaler",
    [("None", Builtin("None", None)), ("Lanczos", Builtin("Lanczos", LANCZOS)),
     ("Nearest", Builtin("Nearest", NEAREST))],
)  # fmt: skip


@dataclass(frozen=True)
class UpscalerRef:
    """A resolved upscaler: a built-in (``path`` is None) or a model file in a folder kind."""

    name: str
    kind: str  # "builtin", a MODEL_FOLDERS name, or "file" (a full path given explicitly)
    path: Path | None = None


@dataclass(frozen=True)
class LoadedUpscaler:
    """A model upscaler ready to run: spandrel descriptor plus A1111 tiling for its folder."""

    ref: UpscalerRef
    model: Any  # spandrel.ImageModelDescriptor
    folder: ModelFolder
    device: torch.device
    dtype: torch.dtype

    @property
    def native_scale(self) -> int:
        """The model's own scale factor (1, 2, 3, 4, 8...)."""
        return int(self.model.scale)

    @property
    def architecture(self) -> str:
        """The architecture spandrel detected (``ESRGAN``, ``RealESRGAN Compact``, ``SwinIR``...)."""
        return str(self.model.architecture.name)

    def tiling(self, tile: int | None = None, overlap: int | None = None) -> Tiling:
        """Tile settings, the folder's A1111 defaults where not given (``tile=0``: no tiling)."""
        return Tiling(self.folder.tile if tile is None else tile, self.folder.overlap if overlap is None else overlap)

    def step(self, tiling: Tiling) -> Step:
        """One pass of the model at its native scale over a whole image, tiled."""
        method = TILE_METHODS.get(self.folder.tiling)
        return lambda img: method(self.model, img, tiling, self.device, self.dtype)

    def upscale(self, image: Image.Image, scale: float, *, tile: int | None = None,
                overlap: int | None = None) -> Image.Image:  # fmt: skip
        """``image`` (any supported mode) upscaled to A1111's target size for ``scale``."""
        settings = self.tiling(tile, overlap)
        return upscale_by_steps(to_rgb(image), check_scale(scale), self.step(settings))


def model_upscaler_files(models: ModelsDir) -> list[UpscalerRef]:
    """Every model file in the upscaler folders, in folder then path order (names are file stems)."""
    return [UpscalerRef(p.stem, name, p) for name, _ in MODEL_FOLDERS for p in list_models(models, name)]


def available_upscalers(models: ModelsDir) -> list[UpscalerRef]:
    """Built-ins then model files: what ``--upscaler`` accepts."""
    return [UpscalerRef(n, "builtin") for n in BUILTINS.names()] + model_upscaler_files(models)


def _search_folders(models: ModelsDir, name: str) -> list[UpscalerRef]:
    found = []
    for kind, _ in MODEL_FOLDERS:
        try:
            found.append(UpscalerRef(name, kind, resolve_model(models, kind, name)))
        except ModelNotFoundError:
            continue
    return found


def resolve_upscaler(models: ModelsDir, name: str) -> UpscalerRef:
    """The upscaler ``name`` denotes: a built-in, an A1111 built-in model name, or a model file.

    Raises ModelNotFoundError listing what is available, InvalidRequestError when ambiguous.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("empty upscaler name; give Lanczos, Nearest, None or a model file name")
    if name in BUILTINS:
        return UpscalerRef(BUILTINS.canonical(name), "builtin")
    if name in A1111_NAMES:
        kind, stem = A1111_NAMES.get(name)
        return UpscalerRef(A1111_NAMES.canonical(name), kind, resolve_model(models, kind, stem))
    explicit = Path(name).expanduser()
    if explicit.is_absolute() and explicit.is_file():
        return UpscalerRef(explicit.stem, "file", explicit)
    found = _search_folders(models, name)
    if len(found) > 1:
        where = ", ".join(f"{MODEL_FOLDERS.get(r.kind).kind}: {r.path}" for r in found)
        raise InvalidRequestError(f"upscaler {name!r} is ambiguous ({where}); give the file's full path")
    if not found:
        names = [r.name for r in available_upscalers(models)]
        raise ModelNotFoundError(
            f"upscaler {name!r} not found in {models.root} (folders ESRGAN, RealESRGAN, SwinIR, DAT, HAT); "
            f"available: {', '.join(names)}"
        )
    return found[0]


def load_upscaler(ref: UpscalerRef, *, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> LoadedUpscaler:  # fmt: skip
    """Read, detect (spandrel) and place a model upscaler on ``device``."""
    if ref.path is None:
        raise InvalidRequestError(f"{ref.name} is a built-in upscaler; it has no model to load")
    dev = torch.device(device)
    model = load_model(ref.path, dev, dtype)
    kind = ref.kind if ref.kind in MODEL_FOLDERS else ARCH_FOLDERS.get(str(model.architecture.id), "esrgan")
    return LoadedUpscaler(ref, model, MODEL_FOLDERS.get(kind), dev, model.dtype)


def upscale_image(image: Image.Image, upscaler: str, scale: float, *, models_dir: ModelsDir | str | os.PathLike[str],
                  device: str | torch.device = "cpu", tile: int | None = None, overlap: int | None = None,
                  dtype: torch.dtype = torch.float32) -> Image.Image:  # fmt: skip
    """``image`` upscaled by ``scale`` with the upscaler named ``upscaler``, as A1111's extras tab does.

    ``tile``/``overlap`` are in input px (None: A1111's defaults 192/8; ``tile=0``: untiled). The
    result is 8-bit RGB of A1111's target size (multiples of 8; see :func:`target_size`).
    """
    models = models_dir if isinstance(models_dir, ModelsDir) else ModelsDir(Path(models_dir))
    scale = check_scale(scale)
    rgb = to_rgb(image)
    ref = resolve_upscaler(models, upscaler)
    if ref.kind == "builtin":
        builtin = BUILTINS.get(ref.name)
        step: Step = (lambda img: img) if builtin.resample is None else _resize_step(scale, builtin.resample)
        return upscale_by_steps(rgb, scale, step)
    return load_upscaler(ref, device=device, dtype=dtype).upscale(rgb, scale, tile=tile, overlap=overlap)
