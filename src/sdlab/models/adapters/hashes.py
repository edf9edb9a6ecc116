"""A1111's hashes for LoRAs and embeddings, the ``Lora hashes`` / ``TI hashes`` infotext values, and
finding a network again by name or hash.

* LoRA (``.safetensors``): SHA-256 of the file *after* the header (kohya's "addnet hash": skip the
  8-byte length and the JSON header); other LoRA files: SHA-256 of the whole file. Short hash = the
  first 12 hex digits.
* Embedding: SHA-256 of the whole file; short hash = first 12 hex digits.
* ``Lora hashes: "name: hash, name2: hash2"`` (name as mentioned in the prompt, ``:`` and ``,``
  removed; one entry per name); ``TI hashes`` the same shape for the embeddings used.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from sdlab.errors import AdapterLoadError, ModelNotFoundError
from sdlab.models.files import sha256_file

SHORT_HASH_LENGTH = 12
NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
BLOCK_BYTES = 1024 * 1024
_NAME_DROPPED = str.maketrans("", "", ":,")


def addnet_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a safetensors file's bytes after its header."""
    p = Path(path)
    size = p.stat().st_size
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise AdapterLoadError(f"{p}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise AdapterLoadError(f"{p}: safetensors header length {n} runs past the end of the file")
        fh.seek(8 + n)
        while block := fh.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def lora_hash(path: str | os.PathLike[str]) -> str:
    """A1111's full LoRA hash: addnet hash for .safetensors, plain SHA-256 otherwise."""
    p = Path(path)
    return addnet_hash(p) if p.suffix.lower() == ".safetensors" else sha256_file(p)


def embedding_hash(path: str | os.PathLike[str]) -> str:
    """A1111's full textual-inversion hash: SHA-256 of the whole file."""
    return sha256_file(path)


def short_hash(full: str) -> str:
    """The 12-hex-digit short hash A1111 writes into infotexts."""
    return full[:SHORT_HASH_LENGTH]


def infotext_name(name: str) -> str:
    """A network / embedding name as A1111 writes it into infotexts (``:`` and ``,`` removed)."""
    return name.translate(_NAME_DROPPED)


def hashes_value(pairs: Iterable[tuple[str, str]]) -> str:
    """``"name: shorthash, ..."`` as A1111 writes ``Lora hashes`` / ``TI hashes`` (one entry per cleaned
    name, the last hash winning, in first-mention order). Quoting is the infotext writer's job."""
    table: dict[str, str] = {}
    for name, full in pairs:
        table[infotext_name(name)] = short_hash(full)
    return ", ".join(f"{name}: {h}" for name, h in table.items())


def parse_hashes_value(value: str) -> dict[str, str]:
    """``{name: shorthash}`` from a ``Lora hashes`` / ``TI hashes`` value (malformed entries skipped)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        name, sep, h = item.partition(":")
        if sep and name.strip() and h.strip():
            out[name.strip()] = h.strip().lower()
    return out


def network_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Network files under ``folder`` (recursive, sorted; hidden files skipped)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in NETWORK_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip


def find_by_name(folder: Path, name: str, kind: str = "LoRA") -> Path:
    """The file whose stem is ``name`` (case-insensitive) under ``folder``; ModelNotFoundError otherwise."""
    files = network_files(folder)
    exact = [p for p in files if p.stem == name]
    loose = exact or [p for p in files if p.stem.lower() == name.lower()]
    if loose:
        return loose[0]
    known = ", ".join(p.stem for p in files[:20]) or "none"
    raise ModelNotFoundError(f"{kind} {name!r} not found in {folder}; available: {known}")


def find_by_hash(folder: Path, short: str, cache: Mapping[Path, str] | None = None) -> Path | None:
    """The network file under ``folder`` whose A1111 LoRA hash starts with ``short`` (None if none).
    ``cache``: known full hashes by path (saves hashing large files again)."""
    want = short.strip().lower()
    if not want:
        return None
    for path in network_files(folder):
        full = (cache or {}).get(path) or lora_hash(path)
        if full.startswith(want):
            return path
    return None


def find_from_infotext(folder: Path, name: str, short: str | None) -> Path:
    """A LoRA named in an infotext: by name first; then by its ``Lora hashes`` short hash (renamed file)."""
    try:
        return find_by_name(folder, name)
    except ModelNotFoundError:
        found = find_by_hash(folder, short) if short else None
        if found is None:
            raise
        return found
