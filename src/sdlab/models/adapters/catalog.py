"""What the models folder holds: LoRAs (``Lora/``, ``LyCORIS/``) and embeddings (``embeddings/``),
as frozen infos for ``sdlab loras`` / ``sdlab embeddings``. Files that cannot be read are listed with
their error instead of a type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sdlab.errors import AdapterLoadError
from sdlab.models.adapters.embeddings import embedding_files, load_embedding
from sdlab.models.adapters.hashes import embedding_hash, lora_hash, network_files, short_hash
from sdlab.models.adapters.lora_file import network_family, read_network

LORA_FOLDERS = ("Lora", "LyCORIS")
EMBEDDING_FOLDER = "embeddings"


@dataclass(frozen=True)
class NetworkInfo:
    """A LoRA file: ``types`` (module types, e.g. ("lora",) or ("loha",)), ``family`` (sd1/sd2/sdxl or
    None), ``rank`` (largest module rank or None), ``hash`` (A1111 short hash); ``error`` if unreadable."""

    name: str
    path: Path
    types: tuple[str, ...]
    family: str | None
    rank: int | None
    hash: str
    error: str = ""


@dataclass(frozen=True)
class EmbeddingInfo:
    """An embedding file: ``vectors`` (count), ``widths`` (encoder widths), ``family``, ``hash`` (short)."""

    name: str
    path: Path
    vectors: int
    widths: tuple[int, ...]
    family: str | None
    hash: str
    error: str = ""


def network_info(path: str | os.PathLike[str]) -> NetworkInfo:
    """Read one network file's listing info (errors are recorded, not raised)."""
    p = Path(path)
    try:
        digest = short_hash(lora_hash(p))
    except (AdapterLoadError, OSError) as exc:
        return NetworkInfo(p.stem, p, (), None, None, "", str(exc))
    try:
        net = read_network(p)
        return NetworkInfo(p.stem, p, net.module_types, network_family(net), net.rank, digest)
    except AdapterLoadError as exc:
        return NetworkInfo(p.stem, p, (), None, None, digest, str(exc))


def list_loras(models_dir: str | os.PathLike[str]) -> tuple[NetworkInfo, ...]:
    """Every network file under ``models_dir/Lora`` and ``models_dir/LyCORIS``, sorted by path."""
    root = Path(models_dir)
    return tuple(network_info(p) for folder in LORA_FOLDERS for p in network_files(root / folder))


def embedding_info(path: str | os.PathLike[str]) -> EmbeddingInfo:
    """Read one embedding file's listing info (errors are recorded, not raised)."""
    p = Path(path)
    digest = short_hash(embedding_hash(p))
    try:
        emb = load_embedding(p)
        return EmbeddingInfo(emb.name, p, emb.vector_count, emb.widths, emb.family, digest)
    except AdapterLoadError as exc:
        return EmbeddingInfo(p.stem, p, 0, (), None, digest, str(exc))


def list_embeddings(models_dir: str | os.PathLike[str]) -> tuple[EmbeddingInfo, ...]:
    """Every embedding file under ``models_dir/embeddings``, sorted by path."""
    return tuple(embedding_info(p) for p in embedding_files(Path(models_dir) / EMBEDDING_FOLDER))
