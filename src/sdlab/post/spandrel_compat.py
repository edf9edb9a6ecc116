"""Importing spandrel without torchvision.

spandrel 0.4.2 declares torchvision as a dependency, but its whole source uses exactly three names
from it, all from ``torchvision.transforms.functional``, in two architectures sdlab does not use for
upscaling:

* ``normalize`` (RestoreFormer, a face restorer): ``(x - mean) / std`` per channel;
* ``rotate`` and ``InterpolationMode`` (LaMa, an inpainting model, in its optional learnable
  spatial-transform wrapper).

The only torchvision wheels the registries offer for torch 2.13 are CUDA builds whose C++ ops do not
load on the CPU torch; once such a wheel is installed, ``import transformers`` (and so diffusers) fails
unless op schemas are registered first. sdlab therefore does **not** install torchvision: spandrel is
installed with ``pip install --no-deps`` and, when no real torchvision is importable, the three names
are provided by a stand-in module that exists in ``sys.modules`` **only while** ``import spandrel`` runs
(the entries are removed right after, so ``importlib.util.find_spec("torchvision")`` keeps answering
``None`` and transformers never sees it). When a real torchvision is installed, it is used as is.

The one residue: spandrel's RestoreFormer and LaMa modules keep references to the stand-in functions.
``normalize`` is exact; ``rotate`` raises, so LaMa models with the spatial transform cannot run here.
"""

from __future__ import annotations

import enum
import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import torch

from sdlab.errors import UnsupportedModelError

STAND_IN_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
INSTALL_HINT = "install it with: pip install --no-deps spandrel==0.4.2 einops==0.8.2"

_IMPORT_LOCK = threading.Lock()  # serialises the stand-in window (a lock, not mutable state)


class InterpolationMode(enum.Enum):
    """The interpolation names of ``torchvision.transforms.InterpolationMode`` (values identical)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(
    tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False
) -> torch.Tensor:
    """``(tensor - mean) / std`` per channel of a ``(..., C, H, W)`` float tensor, as torchvision does."""
    if not tensor.is_floating_point():
        raise TypeError(f"normalize expects a float tensor, got {tensor.dtype}")
    out = tensor if inplace else tensor.clone()
    m = torch.as_tensor(mean, dtype=out.dtype, device=out.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=out.dtype, device=out.device).view(-1, 1, 1)
    if (s == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {out.dtype}, leading to division by zero.")
    return out.sub_(m).div_(s)


def rotate(*_args: object, **_kwargs: object) -> torch.Tensor:
    """Not provided: only LaMa's learnable spatial transform calls it (never used by sdlab)."""
    raise UnsupportedModelError(
        "this model needs torchvision.transforms.functional.rotate, which sdlab does not provide "
        "(torchvision is not installed); use another model"
    )


def _module(name: str, **attrs: object) -> ModuleType:
    mod = ModuleType(name, "sdlab stand-in for the parts of torchvision that spandrel imports")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
    mod.__path__ = []  # a package, so submodules resolve through sys.modules
    mod.__dict__.update(attrs)
    return mod


def stand_in_modules() -> dict[str, ModuleType]:
    """Fresh stand-in modules for :data:`STAND_IN_MODULES`, linked as a package tree."""
    functional = _module(STAND_IN_MODULES[2], normalize=normalize, rotate=rotate, InterpolationMode=InterpolationMode)
    transforms = _module(STAND_IN_MODULES[1], functional=functional, InterpolationMode=InterpolationMode)
    root = _module(STAND_IN_MODULES[0], transforms=transforms, __version__="0+sdlab.stand.in")
    return dict(zip(STAND_IN_MODULES, (root, transforms, functional), strict=True))


@contextmanager
def torchvision_stand_in() -> Iterator[None]:
    """Put the stand-in modules into ``sys.modules`` for the duration of the block, then remove them.

    Only names that were absent are added, and only those exact module objects are removed.
    """
    added = {name: mod for name, mod in stand_in_modules().items() if name not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, mod in added.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def real_torchvision_installed() -> bool:
    """Whether a real torchvision is importable (found on the path; it is not imported here)."""
    mod = sys.modules.get("torchvision")
    if mod is not None:
        return getattr(mod, "__spec__", None) is not None and mod.__spec__.loader is not None
    return importlib.util.find_spec("torchvision") is not None


def import_spandrel() -> ModuleType:
    """The ``spandrel`` module, imported with the torchvision stand-in when no real torchvision exists.

    Raises UnsupportedModelError with the install command when spandrel (or einops) is missing.
    """
    loaded = sys.modules.get("spandrel")
    if loaded is not None:
        return loaded
    return _guarded_import("spandrel", f"model upscalers and face restorers need it; {INSTALL_HINT}")


def _guarded_import(name: str, missing_hint: str) -> ModuleType:
    """Import ``name`` with the stand-in when needed; sdlab errors for a missing package or a broken torchvision."""
    with _IMPORT_LOCK:
        try:
            if real_torchvision_installed():
                return importlib.import_module(name)
            with torchvision_stand_in():
                return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise UnsupportedModelError(f"the package {exc.name!r} is not installed: {missing_hint}") from None
        except (RuntimeError, OSError, ImportError) as exc:
            raise UnsupportedModelError(
                f"importing {name} failed inside the installed torchvision, which does not work with this torch "
                f"({type(exc).__name__}: {str(exc)[:200]}); sdlab does not need torchvision: pip uninstall torchvision"
            ) from None


def import_extra_arches() -> ModuleType:
    """``spandrel_extra_arches`` (non-commercial licences: CodeFormer...), imported like spandrel."""
    import_spandrel()
    return _guarded_import(
        "spandrel_extra_arches",
        "CodeFormer's architecture is in this optional package, under non-commercial licences (not sdlab's "
        "Apache-2.0); if its licence suits you, install it with: pip install --no-deps spandrel_extra_arches==0.2.0",
    )
