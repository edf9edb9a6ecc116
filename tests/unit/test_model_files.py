"""models.files: defensive safetensors header parsing, safe pickle loading, hashes."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdlab.errors import UnsupportedModelError
from sdlab.models.files import (
    HashCache,
    as_dtype,
    legacy_model_hash,
    load_pickle_state_dict,
    open_state_dict,
    read_header,
    sha256_file,
    short_hash,
)


def raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_header_names_shapes_dtypes_and_metadata(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.float16)}, str(p), {"k": "v"})
    h = read_header(p)
    assert h.format == "safetensors"
    assert h.shapes() == {"a.weight": (2, 3), "b": (4,)}
    assert {t.name: t.dtype for t in h.tensors} == {"a.weight": "float32", "b": "float16"}
    assert dict(h.metadata) == {"k": "v"}


def test_lazy_state_dict_reads_values(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save_file({"x": torch.arange(6.0).reshape(2, 3)}, str(p))
    sd = open_state_dict(p)
    assert list(sd) == ["x"] and "x" in sd and "y" not in sd
    assert torch.equal(sd["x"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize(
    ("header", "data", "fact"),
    [
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "outside the data"),
        ({"x": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 12, "do not match shape"),
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
        ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, "invalid shape"),
        ({"x": "nonsense"}, b"", "malformed"),
        ({"__metadata__": [1]}, b"", "__metadata__"),
    ],
)  # fmt: skip
def test_bad_headers_are_refused_with_the_fact(tmp_path: Path, header: dict, data: bytes, fact: str) -> None:
    p = raw_safetensors(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(UnsupportedModelError, match=fact) as info:
        read_header(p)
    assert str(p) in str(info.value)


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    tiny = tmp_path / "t.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(UnsupportedModelError, match="truncated"):
        read_header(tiny)
    long = tmp_path / "l.safetensors"
    long.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(UnsupportedModelError, match="past the end"):
        read_header(long)
    junk = tmp_path / "j.safetensors"
    junk.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(UnsupportedModelError, match="not valid JSON"):
        read_header(junk)
    whole = tmp_path / "w.safetensors"
    save_file({"x": torch.ones(100)}, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-40])
    with pytest.raises(UnsupportedModelError, match="outside the data"):
        read_header(cut)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="unknown model file type"):
        read_header(p)


class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    for suffix in (".ckpt", ".pt"):
        p = tmp_path / f"evil{suffix}"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _WritesAFile(str(target))}, p)
        with pytest.raises(UnsupportedModelError, match="code execution"):
            read_header(p)
        with pytest.raises(UnsupportedModelError, match="code execution"):
            load_pickle_state_dict(p)
    legacy = tmp_path / "evil_legacy.ckpt"
    legacy.write_bytes(pickle.dumps(_WritesAFile(str(target))))
    with pytest.raises(UnsupportedModelError):
        read_header(legacy)
    assert not target.exists()


def test_pickle_state_dict_unwrapped_and_shapes_without_data(tmp_path: Path) -> None:
    p = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2, 2), "b": torch.zeros(3)}, "global_step": 7}, p)
    assert read_header(p).shapes() == {"a": (2, 2), "b": (3,)}
    sd = load_pickle_state_dict(p)
    assert torch.equal(sd["a"], torch.ones(2, 2)) and set(sd) == {"a", "b"}
    nested = tmp_path / "up.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.ones(1)}}, nested)
    assert set(read_header(nested).shapes()) == {"params_ema.conv_first.weight"}


def test_hashes_match_a1111_definitions(tmp_path: Path) -> None:
    p = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # 1.28 MB: spans the legacy window at 1 MiB
    p.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    assert sha256_file(p, block_bytes=4096) == full
    assert short_hash(full) == full[:10]
    assert legacy_model_hash(p) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_hash_cache_keys_on_size_and_mtime(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"one")
    cache = HashCache()
    first = cache.hashes(p)
    assert cache.hashes(p) is first and len(cache) == 1
    p.write_bytes(b"two!")
    second = cache.hashes(p)
    assert second.sha256 == hashlib.sha256(b"two!").hexdigest() and len(cache) == 2


def test_hash_store_persists_across_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"weights" * 1000)
    store = tmp_path / "hashes.json"
    first = HashCache(store).hashes(p)
    assert first.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    saved = json.loads(store.read_text())
    assert saved["format"] == "sdlab-file-hashes" and len(saved["files"]) == 1

    def no_hashing(*_: object, **__: object) -> str:
        raise AssertionError("hashed again although the store had it")

    monkeypatch.setattr("sdlab.models.files.sha256_file", no_hashing)
    again = HashCache(store)
    assert len(again) == 1 and again.hashes(p) == first


def test_hash_store_entry_goes_stale_when_the_file_changes(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"one")
    store = tmp_path / "hashes.json"
    HashCache(store).hashes(p)
    p.write_bytes(b"two!")
    assert HashCache(store).hashes(p).sha256 == hashlib.sha256(b"two!").hexdigest()
    files = json.loads(store.read_text())["files"]
    assert [f["size"] for f in files] == [4]  # one entry per path: the stale one was replaced


def test_hash_store_merges_what_other_processes_wrote(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    store = tmp_path / "hashes.json"
    one, two = HashCache(store), HashCache(store)  # both read the empty store first
    one.hashes(a)
    two.hashes(b)
    assert {Path(f["path"]).name for f in json.loads(store.read_text())["files"]} == {"a.ckpt", "b.ckpt"}


@pytest.mark.parametrize(
    "content",
    [b"not json{", b"\xff\xfe", json.dumps({"format": "other", "files": []}).encode(), b"[1, 2]"],
)
def test_corrupt_hash_store_warns_and_is_replaced(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "m.pt"
    p.write_bytes(b"x")
    store = tmp_path / "hashes.json"
    store.write_bytes(content)
    with pytest.warns(UserWarning, match="hash"):
        cache = HashCache(store)
    with pytest.warns(UserWarning):
        assert cache.hashes(p).sha256 == hashlib.sha256(b"x").hexdigest()
    assert json.loads(store.read_text())["format"] == "sdlab-file-hashes"


def test_hash_store_skips_malformed_entries(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    p.write_bytes(b"x")
    st = p.stat()
    good = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": hashlib.sha256(b"x").hexdigest(), "legacy": "0" * 8}
    bad = [{**good, "sha256": "nothex"}, {**good, "size": "1"}, {**good, "legacy": None}, "entry", None]
    store = tmp_path / "hashes.json"
    store.write_text(json.dumps({"format": "sdlab-file-hashes", "version": 1, "files": [*bad, good]}))
    cache = HashCache(store)
    assert len(cache) == 1 and cache.hashes(p).legacy == "0" * 8


def test_unwritable_hash_store_only_warns(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    p.write_bytes(b"x")
    store = tmp_path / "missing-folder" / "hashes.json"
    cache = HashCache(store)
    with pytest.warns(UserWarning, match="cannot write hash cache"):
        assert cache.hashes(p).sha256 == hashlib.sha256(b"x").hexdigest()
    assert not store.parent.exists()


def test_tensors_are_read_without_mmap_and_equal_the_file(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sdlab.models.files import read_safetensors_header, read_tensor

    tensors = {
        "a": torch.randn(3, 5, dtype=torch.float16), "b": torch.randn(7).to(torch.bfloat16),
        "flag": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
        "ids": torch.arange(10, dtype=torch.int64),
    }
    p = tmp_path / "m.safetensors"
    save_file(tensors, str(p))
    expected = load_file(str(p))
    sd = open_state_dict(p)
    for name, want in expected.items():
        got = sd[name]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
        assert got.data_ptr() % 64 == 0 or got.numel() == 0  # fresh aligned memory, not a file mapping
    header = read_safetensors_header(p)
    info = next(t for t in header.tensors if t.name == "ids")
    p.write_bytes(p.read_bytes()[: info.offset + 8])  # cut inside the tensor
    with pytest.raises(UnsupportedModelError, match="ended"):
        read_tensor(p, info)


def test_a_cast_read_equals_the_stored_tensor_cast_and_leaves_integers_alone(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(64, 33, dtype=torch.float16), "b": torch.randn(5).to(torch.bfloat16),
               "ids": torch.arange(4, dtype=torch.int64), "none": torch.zeros(0, 3, dtype=torch.float16)}  # fmt: skip
    p = tmp_path / "m.safetensors"
    save_file(tensors, str(p))
    for sd in (as_dtype(open_state_dict(p), torch.float32), as_dtype(dict(tensors), torch.float32)):
        for name, stored in tensors.items():
            got = sd[name]
            want = stored.to(torch.float32) if stored.is_floating_point() else stored
            assert got.dtype == want.dtype and torch.equal(got, want)
    assert as_dtype(as_dtype(dict(tensors), torch.float32), torch.float16)["b"].dtype == torch.float16


def test_tensors_at_unaligned_offsets_read_correctly(tmp_path: Path) -> None:
    # a 3-byte tensor first puts the float16 data at byte 3 and the float32 data at byte 9
    half, single = torch.tensor([1.5, -2.25, 3.0], dtype=torch.float16), torch.tensor([0.1, 7.0], dtype=torch.float32)
    data = b"abc" + half.view(torch.uint8).numpy().tobytes() + single.view(torch.uint8).numpy().tobytes()
    header = {"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "h": {"dtype": "F16", "shape": [3], "data_offsets": [3, 9]},
              "s": {"dtype": "F32", "shape": [2], "data_offsets": [9, 17]}}  # fmt: skip
    p = raw_safetensors(tmp_path / "odd.safetensors", header, data)
    sd = open_state_dict(p)
    assert torch.equal(sd["h"], half) and torch.equal(sd["s"], single) and sd["a"].tolist() == [97, 98, 99]
    assert torch.equal(as_dtype(sd, torch.float32)["h"], half.float())
