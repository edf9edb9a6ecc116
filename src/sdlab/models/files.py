"""Reading model files safely: safetensors headers, pickled checkpoints, state dicts, hashes.

* ``.safetensors``: the header is parsed and validated here before anything else touches the file
  (truncation, header length, JSON, dtypes, offsets in range and not overlapping); tensors are then
  read lazily, one at a time, each through its own short-lived mapping, cast to the load dtype on the way.
* ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: only through ``torch.load(weights_only=True)`` (mmap when
  the file is a zip archive). A pickle that needs code execution is refused, never run.
* Hashes as A1111 writes them: full SHA-256 (``Model hash`` = first 10 hex digits) and the legacy
  8-hex ``model_hash`` (sha256 of 64 KiB at offset 1 MiB).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import pickle
import struct
import threading
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from sdlab.errors import UnsupportedModelError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024
HASH_BLOCK_BYTES = 1024 * 1024

#: safetensors dtype name -> (bytes per element, torch dtype name)
SAFETENSORS_DTYPES: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
        "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"),
        "U8": (1, "uint8"), "U16": (2, "uint16"), "U32": (4, "uint32"), "U64": (8, "uint64"),
        "BOOL": (1, "bool"), "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
    }
)  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype (torch dtype name, e.g. ``"float16"``) of one stored tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int = field(default=-1, compare=False)
    """Absolute byte offset of the data in a safetensors file (-1: not known, e.g. pickles)."""


@dataclass(frozen=True)
class CheckpointHeader:
    """What a model file holds, read without loading tensor data.

    ``metadata`` is the safetensors ``__metadata__`` (empty for pickles).
    """

    path: Path
    format: str  # "safetensors" | "pickle"
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: shape}`` of every tensor."""
        return {t.name: t.shape for t in self.tensors}


# --------------------------------------------------------------------------------------------------
# safetensors header


def _bad(path: Path, fact: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{path}: not a readable model file: {fact}")


def _read_raw_header(path: Path) -> tuple[dict[str, Any], int]:
    """The header JSON object and the byte offset where tensor data starts."""
    size = path.stat().st_size
    if size < 8:
        raise _bad(path, f"safetensors file is truncated ({size} bytes, the 8-byte header length is missing)")
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8:
            raise _bad(path, f"safetensors header length {n} runs past the end of the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise _bad(path, f"safetensors header length {n} exceeds {MAX_HEADER_BYTES} bytes")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "safetensors header is not a JSON object")
    return header, 8 + n


def _tensor_entry(path: Path, name: str, entry: Any, data_len: int, data_start: int) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict):
        raise _bad(path, f"tensor {name!r} has a malformed header entry")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise _bad(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _bad(path, f"tensor {name!r} has an invalid shape {shape!r}")
    ok = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    if not ok or not 0 <= offsets[0] <= offsets[1] <= data_len:
        raise _bad(path, f"tensor {name!r} has data offsets {offsets!r} outside the data ({data_len} bytes)")
    itemsize, torch_name = SAFETENSORS_DTYPES[dtype]
    if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        raise _bad(path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes do not match shape {shape} {dtype}")
    return TensorInfo(name, tuple(shape), torch_name, data_start + offsets[0]), offsets[0], offsets[1]


def read_safetensors_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """Parse and validate a safetensors header; raises UnsupportedModelError naming the defect."""
    p = Path(path)
    header, data_start = _read_raw_header(p)
    data_len = p.stat().st_size - data_start
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _bad(p, "safetensors __metadata__ is not an object")
    infos, spans = [], []
    for name, entry in header.items():
        info, begin, end = _tensor_entry(p, name, entry, data_len, data_start)
        infos.append(info)
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, name_a), (begin_b, end_b, name_b) in zip(spans, spans[1:]):
        if begin_b < end_a and begin_b != end_b:
            raise _bad(p, f"tensors {name_a!r} and {name_b!r} overlap in the data section")
    metadata = MappingProxyType({str(k): str(v) for k, v in meta.items()})
    return CheckpointHeader(p, "safetensors", tuple(infos), metadata)


# --------------------------------------------------------------------------------------------------
# pickled checkpoints


def _torch_load(path: Path, map_location: str) -> Any:
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"{path}: refused to load: the pickle needs code execution (only plain tensors and containers "
            f"are allowed; {first}). Convert it to .safetensors with a tool you trust, or use another file."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"torch.load failed: {exc}") from None


def unwrap_state_dict(obj: Any, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` inside a loaded pickle (nested ``state_dict`` unwrapped).

    Non-tensor entries (``global_step``...) are dropped.
    """
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise _bad(path or Path("<object>"), f"expected a dict of tensors, found {type(obj).__name__}")
    return dict(_flatten_tensors(obj, ""))


def _flatten_tensors(obj: dict[Any, Any], prefix: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of a nested dict as dotted names (e.g. ``params_ema.conv_first.weight``); depth <= 4."""
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            yield prefix + str(k), v
        elif isinstance(v, dict) and depth < 4:
            yield from _flatten_tensors(v, f"{prefix}{k}.", depth + 1)


def load_pickle_state_dict(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a ``.ckpt``/``.pt``/``.pth``/``.bin`` state dict safely (``weights_only=True``, mmap if zip)."""
    p = Path(path)
    return unwrap_state_dict(_torch_load(p, map_location), p)


# --------------------------------------------------------------------------------------------------
# format dispatch


def file_format(path: str | os.PathLike[str]) -> str:
    """``"safetensors"`` or ``"pickle"`` from the suffix; UnsupportedModelError otherwise."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    known = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
    raise UnsupportedModelError(f"{p}: unknown model file type {suffix!r}; expected one of {known}")


def _require_file(p: Path) -> None:
    if not p.is_file():
        raise UnsupportedModelError(f"{p}: not a file")


def read_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """Names, shapes and dtypes of a model file, without reading tensor data.

    For pickles the archive is loaded onto the meta device (``weights_only=True``), so no data is read.
    """
    p = Path(path)
    _require_file(p)
    if file_format(p) == "safetensors":
        return read_safetensors_header(p)
    sd = load_pickle_state_dict(p, map_location="meta")
    infos = tuple(TensorInfo(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items())
    return CheckpointHeader(p, "pickle", infos)


def _copy_from(window: mmap.mmap, offset: int, out: torch.Tensor, stored: torch.dtype) -> None:
    """Copy (and cast) ``out.numel()`` elements of ``stored`` at ``offset`` of ``window`` into ``out``.

    The view on the window lives only inside this call, so the window can be closed afterwards.
    """
    out.view(-1).copy_(torch.frombuffer(window, dtype=stored, count=out.numel(), offset=offset))


def read_tensor(path: Path, info: TensorInfo, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One safetensors tensor copied into fresh (64-byte aligned) memory, cast to ``dtype`` if floating.

    Only the tensor's own bytes are mapped, for the one copy, and unmapped at once: a whole-file mmap
    keeps every page it touched in the process's RSS until it is closed (doubling a load's peak), and a
    ``pread`` into a buffer followed by a cast writes every byte twice. A file shorter than its header
    promises is refused before mapping (one truncated by another process during the copy itself, a few
    milliseconds, would still fault, as under any memory-mapping loader).
    """
    stored = getattr(torch, info.dtype)
    target = dtype if dtype is not None and stored.is_floating_point and dtype.is_floating_point else stored
    out = torch.empty(info.shape, dtype=target)
    nbytes = out.numel() * stored.itemsize
    if nbytes == 0:
        return out
    with path.open("rb", buffering=0) as fh:
        short = info.offset + nbytes - os.fstat(fh.fileno()).st_size
        if short > 0:
            raise _bad(path, f"tensor {info.name!r}: file ended {short} bytes early")
        base = info.offset - info.offset % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(fh.fileno(), info.offset + nbytes - base, access=mmap.ACCESS_COPY, offset=base) as window:
            _copy_from(window, info.offset - base, out, stored)
    return out


class SafetensorsStateDict(Mapping[str, torch.Tensor]):
    """A read-only, lazy ``{name: tensor}`` over a validated safetensors file.

    Each access reads one tensor (:func:`read_tensor`), floating-point ones cast to ``dtype`` when given;
    nothing is cached here, so the caller decides what is kept.
    """

    def __init__(self, header: CheckpointHeader, dtype: torch.dtype | None = None) -> None:
        self.header, self.dtype = header, dtype
        self._infos = {t.name: t for t in header.tensors}

    def __getitem__(self, key: str) -> torch.Tensor:
        return read_tensor(self.header.path, self._infos[key], self.dtype)

    def __contains__(self, key: object) -> bool:
        return key in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)


class CastStateDict(Mapping[str, torch.Tensor]):
    """``{name: tensor}`` of another mapping with floating-point tensors cast to ``dtype`` on access."""

    def __init__(self, sd: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
        self._sd, self.dtype = sd, dtype

    def __getitem__(self, key: str) -> torch.Tensor:
        v = self._sd[key]
        return v.to(self.dtype) if v.is_floating_point() else v

    def __contains__(self, key: object) -> bool:
        return key in self._sd

    def __iter__(self) -> Iterator[str]:
        return iter(self._sd)

    def __len__(self) -> int:
        return len(self._sd)


def as_dtype(sd: Mapping[str, torch.Tensor], dtype: torch.dtype) -> Mapping[str, torch.Tensor]:
    """A view of ``sd`` whose floating-point tensors come out as ``dtype`` (a lazy file casts while reading)."""
    if isinstance(sd, SafetensorsStateDict):
        return SafetensorsStateDict(sd.header, dtype)
    if isinstance(sd, CastStateDict):
        return as_dtype(sd._sd, dtype)
    return CastStateDict(sd, dtype)


def open_state_dict(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """A ``{name: tensor}`` mapping for any supported file: lazy for safetensors, mmap for zip pickles."""
    p = Path(path)
    _require_file(p)
    if file_format(p) == "safetensors":
        return SafetensorsStateDict(read_safetensors_header(p))
    return load_pickle_state_dict(p)


# --------------------------------------------------------------------------------------------------
# hashes


def sha256_file(path: str | os.PathLike[str], block_bytes: int = HASH_BLOCK_BYTES) -> str:
    """Full SHA-256 of a file (lower-case hex), streamed in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(block_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def short_hash(sha256: str) -> str:
    """A1111's ``Model hash``: the first 10 hex digits of the full SHA-256."""
    return sha256[:10]


def legacy_model_hash(path: str | os.PathLike[str]) -> str:
    """A1111's old 8-hex ``model_hash``: sha256 of the 64 KiB at offset 1 MiB (short files: what is there)."""
    with Path(path).open("rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


@dataclass(frozen=True)
class FileHashes:
    """Hashes of one file: full ``sha256``, A1111 ``short`` (10 hex) and ``legacy`` (8 hex)."""

    sha256: str
    short: str
    legacy: str


HASH_STORE_FORMAT = "sdlab-file-hashes"
MAX_HASH_STORE_BYTES = 16 * 1024 * 1024
_HEX = frozenset("0123456789abcdef")

_HashKey = tuple[str, int, int]


def _is_hex(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX


def _store_entry(item: object) -> tuple[_HashKey, FileHashes] | None:
    """One valid entry of a hash store, or None (wrong types, bad hex)."""
    if not isinstance(item, dict):
        return None
    path, size, mtime, full, legacy = (item.get(k) for k in ("path", "size", "mtime_ns", "sha256", "legacy"))
    if not (isinstance(path, str) and type(size) is int and type(mtime) is int):
        return None
    if not (_is_hex(full, 64) and _is_hex(legacy, 8)):
        return None
    return (path, size, mtime), FileHashes(full, short_hash(full), legacy)


def read_hash_store(path: Path) -> dict[_HashKey, FileHashes]:
    """Entries of the JSON hash store at ``path``; {} if absent. Invalid entries are skipped.

    Raises UnsupportedModelError for a file that is not a hash store (too large, not JSON, wrong format).
    """
    try:
        if path.stat().st_size > MAX_HASH_STORE_BYTES:
            raise UnsupportedModelError(f"hash cache {path} is over {MAX_HASH_STORE_BYTES} bytes")
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModelError(f"hash cache {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != HASH_STORE_FORMAT or not isinstance(data.get("files"), list):
        raise UnsupportedModelError(f"{path} is not an sdlab hash cache (format {HASH_STORE_FORMAT!r})")
    return dict(e for e in map(_store_entry, data["files"]) if e is not None)


def write_hash_store(path: Path, entries: Mapping[_HashKey, FileHashes]) -> None:
    """Write ``entries`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    files = [
        {"path": k[0], "size": k[1], "mtime_ns": k[2], "sha256": h.sha256, "legacy": h.legacy}
        for k, h in sorted(entries.items())
    ]
    text = json.dumps({"format": HASH_STORE_FORMAT, "version": 1, "files": files}, indent=1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class HashCache:
    """Remembers file hashes keyed by (resolved path, size, mtime_ns); an ordinary object, not global.

    With ``store`` (a JSON file, like A1111's ``cache.json``) hashes also persist across processes: the
    store is read once here and rewritten (merged, atomically) after each new hash. A store that cannot
    be read or written only costs a warning and the hashing time, never the request.
    """

    def __init__(self, store: str | os.PathLike[str] | None = None) -> None:
        self._hashes: dict[_HashKey, FileHashes] = {}
        self.store = Path(store) if store is not None else None
        self._lock = threading.Lock()
        if self.store is not None:
            self._hashes.update(self._read_store())

    def _read_store(self) -> dict[_HashKey, FileHashes]:
        assert self.store is not None
        try:
            return read_hash_store(self.store)
        except UnsupportedModelError as exc:
            warnings.warn(f"{exc}; hashes are computed again and the file is replaced", stacklevel=3)
            return {}

    def _persist(self, key: _HashKey, found: FileHashes) -> None:
        """Merge ``key`` into the store: keep what other processes wrote, one entry per path."""
        assert self.store is not None
        with self._lock:
            merged = {k: v for k, v in self._read_store().items() if k[0] != key[0]}
            merged[key] = found
            try:
                write_hash_store(self.store, merged)
            except OSError as exc:
                warnings.warn(f"cannot write hash cache {self.store}: {exc}", stacklevel=3)

    def hashes(self, path: str | os.PathLike[str]) -> FileHashes:
        """Hashes of ``path``, computed once per (path, size, mtime)."""
        p = Path(path).resolve()
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        found = self._hashes.get(key)
        if found is None:
            full = sha256_file(p)
            found = FileHashes(full, short_hash(full), legacy_model_hash(p))
            self._hashes[key] = found
            if self.store is not None:
                self._persist(key, found)
        return found

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """Full SHA-256 of ``path`` (cached)."""
        return self.hashes(path).sha256

    def __len__(self) -> int:
        return len(self._hashes)
