"""Reading upscaler / face-restorer files safely and handing them to spandrel for detection.

The file is read by sdlab, never by spandrel's own loader: ``.safetensors`` through the validated
header reader of :mod:`sdlab.models.files`; ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` only through
``torch.load(weights_only=True)``, so a pickle that would execute code is refused and never run
(TorchScript archives are refused too: loading them runs their code). spandrel then detects the
architecture from the key names and tensor shapes.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdlab.errors import UnsupportedModelError
from sdlab.models.files import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, open_state_dict
from sdlab.post.spandrel_compat import import_extra_arches, import_spandrel


def _load_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(
            f"{path}: refused to load: the pickle needs code execution, which sdlab never runs ({first}). "
            "Use a .safetensors version of this model or a file from a source you trust."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise UnsupportedModelError(f"{path}: not a readable model file (torch.load failed: {exc})") from None


def _tensors_only(obj: Mapping[Any, Any], path: Path) -> dict[str, torch.Tensor]:
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise UnsupportedModelError(f"{path}: the file holds no tensors at the top level of its state dict")
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's ``{name: tensor}``: wrappers (``params_ema``, ``state_dict``...) removed as spandrel does.

    Raises UnsupportedModelError for an unknown suffix, a corrupt file or a code-executing pickle.
    """
    p = Path(path)
    if not p.is_file():
        raise UnsupportedModelError(f"{p}: not a file")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj: Any = dict(open_state_dict(p))
    elif suffix in PICKLE_SUFFIXES:
        obj = _load_pickle(p)
    else:
        known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise UnsupportedModelError(f"{p}: unknown model file type {suffix!r}; expected one of {known}")
    if not isinstance(obj, Mapping):
        raise UnsupportedModelError(f"{p}: expected a state dict (a mapping of tensors), found {type(obj).__name__}")
    canonical = import_spandrel().canonicalize_state_dict(dict(obj))  # also drops "module." / "netG." prefixes
    return _tensors_only(canonical, p)


@dataclass(frozen=True)
class ArchitectureSet:
    """Which spandrel registries detection may use: the core one, plus the non-commercial extras."""

    noncommercial: bool = False

    def registry(self) -> Any:
        """A fresh ``spandrel.ArchRegistry`` (spandrel's global MAIN_REGISTRY is never modified)."""
        spandrel = import_spandrel()
        if not self.noncommercial:
            return spandrel.MAIN_REGISTRY
        extra = import_extra_arches()
        reg = spandrel.MAIN_REGISTRY.copy()
        reg.add(*extra.EXTRA_REGISTRY, ignore_duplicates=True)
        return reg


def detect_model(state_dict: Mapping[str, torch.Tensor], path: Path, arches: ArchitectureSet = ArchitectureSet()) -> Any:
    """A spandrel ``ImageModelDescriptor`` (on CPU, eval mode) for ``state_dict``.

    Raises UnsupportedModelError when no architecture matches or the model is not image-to-image.
    """
    spandrel = import_spandrel()
    try:
        descriptor = arches.registry().load(dict(state_dict))
    except spandrel.UnsupportedModelError:
        raise UnsupportedModelError(
            f"{path}: unknown model architecture: spandrel {spandrel.__version__} recognises none of its "
            f"{len(state_dict)} tensors' layouts (is it an upscaler or face-restoration model?)"
        ) from None
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError, AssertionError) as exc:
        raise UnsupportedModelError(f"{path}: the weights do not fit the detected architecture ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UnsupportedModelError(f"{path}: a {descriptor.architecture.name} model is not an image-to-image model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UnsupportedModelError(
            f"{path}: {descriptor.architecture.name} model has {descriptor.input_channels} input / "
            f"{descriptor.output_channels} output channels; only RGB (3/3) models are supported"
        )
    return descriptor.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               arches: ArchitectureSet = ArchitectureSet()) -> Any:  # fmt: skip
    """Read, detect and move a model to ``device``; half/bfloat16 fall back to float32 when unsupported."""
    p = Path(path)
    descriptor = detect_model(read_state_dict(p), p, arches)
    supported = {torch.float32: True, torch.float16: descriptor.supports_half,
                 torch.bfloat16: descriptor.supports_bfloat16}  # fmt: skip
    use = dtype if supported.get(dtype, False) else torch.float32
    return descriptor.to(torch.device(device)).to(use)
