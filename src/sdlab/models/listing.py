"""Listing the checkpoints of a models folder with their detected family (for ``sdlab models``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdlab.errors import SdlabError
from sdlab.models.detect import Detection, detect
from sdlab.models.files import HashCache
from sdlab.models.paths import ModelsDir, list_models


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint: ``name`` (path relative to ``Stable-diffusion/``), its detection or the error
    message that explains why it is not usable, and A1111's 10-hex short hash (None when not hashed)."""

    name: str
    path: Path
    detection: Detection | None
    error: str | None
    short_hash: str | None

    @property
    def title(self) -> str:
        """A1111's checkpoint title: ``name [hash]`` (just ``name`` without a hash)."""
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


def checkpoint_info(models: ModelsDir, path: Path, hashes: HashCache | None) -> CheckpointInfo:
    """Detection (never loading tensor data) and, if a cache is given, the short hash of one file."""
    name = path.relative_to(models.folder("checkpoint")).as_posix()
    try:
        detection, error = detect(path), None
    except SdlabError as exc:
        detection, error = None, str(exc)
    short = hashes.hashes(path).short if hashes is not None and path.is_file() else None
    return CheckpointInfo(name, path, detection, error, short)


def list_checkpoints(
    models: ModelsDir, *, hashes: HashCache | None = None, compute_hashes: bool = True
) -> list[CheckpointInfo]:
    """Every checkpoint under ``Stable-diffusion/`` with its family or error, and its short hash.

    Hashing reads each file once (full SHA-256); pass a long-lived ``hashes`` cache to reuse results
    for unchanged files, or ``compute_hashes=False`` to skip hashing.
    """
    cache = (hashes if hashes is not None else HashCache()) if compute_hashes else None
    return [checkpoint_info(models, p, cache) for p in list_models(models, "checkpoint")]
