"""The models folder: A1111's layout, name resolution and listing.

A models root holds one sub-folder per kind (``Stable-diffusion/``, ``Lora/``, ``VAE/``...). Names
resolve, in order, as: an explicitly given existing file path; a path relative to the kind's folder;
a file name; a stem; A1111's ``name [hash]`` title; a short hash (8 or 10+ hex digits). Nothing
outside the kind's folder is read unless the caller names the file explicitly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sdlab.errors import InvalidRequestError, ModelNotFoundError
from sdlab.models.files import HashCache, legacy_model_hash
from sdlab.registry import Registry

ENV_VAR = "SDLAB_MODELS"


@dataclass(frozen=True)
class ModelKind:
    """A kind of model file: its sub-folder of the models root and the file suffixes it holds."""

    name: str
    folder: str
    suffixes: tuple[str, ...]


_WEIGHTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

MODEL_KINDS: Registry[ModelKind] = Registry.of(
    "model kind",
    [
        ("checkpoint", ModelKind("checkpoint", "Stable-diffusion", (".safetensors", ".ckpt"))),
        ("lora", ModelKind("lora", "Lora", (".safetensors", ".pt", ".ckpt"))),
        ("lycoris", ModelKind("lycoris", "LyCORIS", (".safetensors", ".pt", ".ckpt"))),
        ("embedding", ModelKind("embedding", "embeddings", (".pt", ".bin", ".safetensors"))),
        ("vae", ModelKind("vae", "VAE", (".safetensors", ".pt", ".ckpt"))),
        ("esrgan", ModelKind("esrgan", "ESRGAN", (".pth", ".pt", ".safetensors"))),
        ("realesrgan", ModelKind("realesrgan", "RealESRGAN", (".pth", ".pt", ".safetensors"))),
        ("swinir", ModelKind("swinir", "SwinIR", (".pth", ".pt", ".safetensors"))),
        ("dat", ModelKind("dat", "DAT", (".pth", ".pt", ".safetensors"))),
        ("hat", ModelKind("hat", "HAT", (".pth", ".pt", ".safetensors"))),
        ("gfpgan", ModelKind("gfpgan", "GFPGAN", _WEIGHTS)),
        ("codeformer", ModelKind("codeformer", "Codeformer", _WEIGHTS)),
    ],
    aliases=[("Stable-diffusion", "checkpoint"), ("checkpoints", "checkpoint"), ("embeddings", "embedding"),
             ("loras", "lora")],  # fmt: skip
)


@dataclass(frozen=True)
class ModelsDir:
    """A models root in A1111's layout (``root/Stable-diffusion``, ``root/Lora``...)."""

    root: Path

    def folder(self, kind: str) -> Path:
        """The sub-folder of ``kind`` (a name in :data:`MODEL_KINDS`)."""
        return self.root / MODEL_KINDS.get(kind).folder


def choose_models_dir(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str], cwd: str | os.PathLike[str]
) -> ModelsDir:
    """The models root: ``explicit`` if given, else ``$SDLAB_MODELS``, else ``<cwd>/models``."""
    if explicit is not None:
        return ModelsDir(Path(explicit))
    if env.get(ENV_VAR):
        return ModelsDir(Path(env[ENV_VAR]))
    return ModelsDir(Path(cwd) / "models")


HASH_STORE_NAME = ".sdlab-hashes.json"


def hash_store_path(models: ModelsDir) -> Path | None:
    """Where file hashes persist for ``models``: a file in its root; None when the root is no folder."""
    return models.root / HASH_STORE_NAME if models.root.is_dir() else None


def list_models(models: ModelsDir, kind: str) -> list[Path]:
    """Files of ``kind`` under its folder (recursively), sorted by relative path; [] if no folder.

    Checkpoints also include diffusers-format folders (holding ``model_index.json``).
    """
    spec = MODEL_KINDS.get(kind)
    base = models.folder(kind)
    if not base.is_dir():
        return []
    files = [p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in spec.suffixes]
    if spec.name == "checkpoint":
        files += [p.parent for p in base.rglob("model_index.json")]
    inside = [p for p in files if _within(p, base)]
    return sorted(inside, key=lambda p: p.relative_to(base).as_posix().lower())


def _within(path: Path, base: Path) -> bool:
    return path.resolve().is_relative_to(base.resolve())


_TITLE = re.compile(r"^(?P<name>.+?)\s*\[(?P<hash>[0-9a-fA-F]{8,64})\]$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")


def _by_name(name: str, files: list[Path], base: Path) -> list[Path]:
    """Files matching ``name`` as a relative path, then file name, then stem (case-insensitive)."""
    want = name.replace("\\", "/").strip().lower()
    for key in (lambda p: p.relative_to(base).as_posix().lower(), lambda p: p.name.lower(),
                lambda p: p.relative_to(base).with_suffix("").as_posix().lower(),
                lambda p: p.stem.lower()):  # fmt: skip
        found = [p for p in files if key(p) == want]
        if found:
            return found
    return []


def _hash_matches(path: Path, digest: str, hashes: HashCache) -> bool:
    digest = digest.lower()
    if path.is_dir():
        return False
    if len(digest) == 8 and legacy_model_hash(path) == digest:
        return True
    return hashes.sha256(path).startswith(digest)


def _not_found(kind: str, name: str, models: ModelsDir, files: list[Path]) -> ModelNotFoundError:
    base = models.folder(kind)
    if not base.is_dir():
        return ModelNotFoundError(f"{kind} {name!r} not found: the folder {base} does not exist")
    if not files:
        return ModelNotFoundError(f"{kind} {name!r} not found: the folder {base} has no {kind} files")
    shown = ", ".join(p.relative_to(base).as_posix() for p in files[:20])
    more = f" (and {len(files) - 20} more)" if len(files) > 20 else ""
    return ModelNotFoundError(f"{kind} {name!r} not found in {base}; available: {shown}{more}")


def resolve_model(models: ModelsDir, kind: str, name: str, *, hashes: HashCache | None = None) -> Path:
    """The file (or diffusers folder) that ``name`` denotes; ModelNotFoundError listing what exists.

    ``hashes`` caches the SHA-256 computed for hash look-ups (a fresh cache is used otherwise).
    """
    if not name or not name.strip():
        raise InvalidRequestError(f"empty {kind} name; give a file name, stem or hash")
    explicit = Path(name).expanduser()
    if explicit.is_absolute() and explicit.exists():
        return explicit
    base, files = models.folder(kind), list_models(models, kind)
    title = _TITLE.match(name.strip())
    found = _by_name(title.group("name") if title else name, files, base)
    hashes = hashes if hashes is not None else HashCache()
    if title:  # the hash decides; the name alone only when no file has that hash (file changed)
        digest = title.group("hash")
        by_hash = [p for p in found if _hash_matches(p, digest, hashes)]
        found = by_hash or [p for p in files if _hash_matches(p, digest, hashes)] or found
    elif not found and _HEX.match(name.strip()):
        found = [p for p in files if _hash_matches(p, name.strip(), hashes)]
    if len(found) > 1:
        shown = ", ".join(p.relative_to(base).as_posix() for p in found)
        raise InvalidRequestError(f"{kind} {name!r} is ambiguous: {shown}; give the relative path")
    if not found and ("/" in name or os.sep in name) and explicit.exists():
        return explicit  # an explicitly given relative file path
    if not found:
        raise _not_found(kind, name, models, files)
    return found[0]
