"""Unit tests for sdlab.outputs: A1111-style image files, EXIF layout, atomic naming, defensive reading."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from PIL import Image

from sdlab import outputs
from sdlab.errors import InvalidRequestError
from sdlab.outputs import (
    SavedImage,
    decode_user_comment,
    encode_image,
    exif_with_user_comment,
    image_file_name,
    next_sequence_number,
    read_infotext,
    save_image,
    user_comment,
)

TEXT = "a cat, (猫:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42"


def _image(mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 90)).convert(mode)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _insert_after_ihdr(png: bytes, extra: bytes) -> bytes:
    return png[:33] + extra + png[33:]


# --- EXIF bytes ----------------------------------------------------------------------------------------


def test_user_comment_is_piexif_unicode() -> None:
    assert user_comment("hi") == b"UNICODE\x00\x00h\x00i"
    assert user_comment("猫") == b"UNICODE\x00\x73\x2b"
    assert user_comment("a\ud800") == b"UNICODE\x00\x00a\x00?"  # lone surrogate replaced, as errors="replace"


def test_exif_layout_is_piexif_dump() -> None:
    comment = b"UNICODE\x00\x00h\x00i"
    expected = (
        b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08"  # TIFF header, big-endian, IFD0 at 8
        + b"\x00\x01" + b"\x87\x69\x00\x04\x00\x00\x00\x01\x00\x00\x00\x1a" + b"\x00\x00\x00\x00"  # IFD0 -> Exif IFD @26
        + b"\x00\x01" + b"\x92\x86\x00\x07\x00\x00\x00\x0c\x00\x00\x00\x28"  # UserComment, UNDEFINED, 12 bytes @40
        + comment
    )  # fmt: skip
    assert exif_with_user_comment("hi") == expected


def test_exif_layout_equals_piexif_when_available() -> None:
    piexif = pytest.importorskip("piexif")
    helper = pytest.importorskip("piexif.helper")
    ref = piexif.dump({"Exif": {0x9286: helper.UserComment.dump(TEXT, encoding="unicode")}})
    assert exif_with_user_comment(TEXT) == ref


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"UNICODE\x00\x00h\x00i", "hi"),
        (b"ASCII\x00\x00\x00hello", "hello"),
        (b"ASCII\x00\x00\x00caf\xc3\xa9", "caf\ufffd\ufffd"),
        (b"JIS\x00\x00\x00\x00\x00abc", "abc"),
        (b"\x00" * 8 + b"undef", "\x00" * 8 + "undef"),  # undefined prefix -> UTF-8 of the whole value
        (b"plain text", "plain text"),
        (b"abc", "abc"),
        (b"UNICODE\x00\x00", "\ufffd"),
    ],
)
def test_decode_user_comment(raw: bytes, expected: str) -> None:
    assert decode_user_comment(raw) == expected


# --- encoding and reading back ------------------------------------------------------------------------------


def test_png_parameters_chunk() -> None:
    latin = encode_image(_image(), "cat\nSteps: 1")
    assert (b"tEXt", b"parameters\x00cat\nSteps: 1") in _png_chunks(latin)
    unicode = encode_image(_image(), TEXT)
    itxt = [body for kind, body in _png_chunks(unicode) if kind == b"iTXt"]
    assert len(itxt) == 1 and itxt[0].startswith(b"parameters\x00")
    assert read_infotext(unicode) == TEXT


def test_jpeg_exif_segment_replaces_jfif_like_piexif() -> None:
    data = encode_image(_image(), TEXT, "jpg")
    exif = exif_with_user_comment(TEXT)
    assert data[:4] == b"\xff\xd8\xff\xe1"
    assert data[4:6] == struct.pack(">H", len(exif) + 2)
    assert data[6 : 6 + len(exif)] == exif
    assert b"JFIF" not in data[: 6 + len(exif) + 4]
    assert read_infotext(data) == TEXT
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (24, 16)


def test_webp_exif_chunk() -> None:
    data = encode_image(_image("RGBA"), TEXT, "webp")
    assert exif_with_user_comment(TEXT)[6:] in data
    assert read_infotext(data) == TEXT


@pytest.mark.parametrize("fmt", ["png", "jpg", "JPEG", ".webp"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I;16", "I"])
def test_every_mode_round_trips(mode: str, fmt: str) -> None:
    assert read_infotext(encode_image(_image(mode), TEXT, fmt)) == TEXT


def test_sixteen_bit_png_stays_sixteen_bit() -> None:
    wide = Image.new("I;16", (8, 8), 40000)
    data = encode_image(wide, TEXT)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "I;16" and image.getpixel((0, 0)) == 40000
    assert read_infotext(data) == TEXT


def test_sixteen_bit_to_jpeg_scales_to_eight_bit() -> None:
    data = encode_image(Image.new("I;16", (8, 8), 65535), TEXT, "jpg")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L" and image.getpixel((0, 0)) >= 250


def test_palette_png_with_transparency() -> None:
    palette = _image("P")
    palette.info["transparency"] = 0
    data = encode_image(palette, TEXT)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "P" and "transparency" in image.info
    assert read_infotext(data) == TEXT


def test_cmyk_jpeg_reads_back() -> None:
    data = encode_image(_image("CMYK"), TEXT, "jpg")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "CMYK"
    assert read_infotext(data) == TEXT


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(InvalidRequestError, match="unknown image format 'gif'; valid image formats: png, jpg, webp"):
        encode_image(_image(), TEXT, "gif")


def test_no_metadata_reads_none() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    assert read_infotext(buffer.getvalue()) is None
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG")
    assert read_infotext(buffer.getvalue()) is None


def _exif_with_raw_comment(raw: bytes) -> bytes:
    head = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08"
    ifd0 = struct.pack(">HHHII", 1, 0x8769, 4, 1, 26) + b"\x00" * 4
    return head + ifd0 + struct.pack(">HHHII", 1, 0x9286, 7, len(raw), 40) + raw


def test_ascii_prefixed_exif_comment() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG", exif=_exif_with_raw_comment(b"ASCII\x00\x00\x00cat\nSteps: 5"))
    assert read_infotext(buffer.getvalue()) == "cat\nSteps: 5"


def test_exif_comment_wins_over_png_parameters_as_in_a1111() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "from chunk")
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG", pnginfo=info, exif=_exif_with_raw_comment(user_comment("from exif")))
    assert read_infotext(buffer.getvalue()) == "from exif"


def test_read_from_path(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(encode_image(_image(), TEXT))
    assert read_infotext(path) == TEXT and read_infotext(str(path)) == TEXT


# --- malformed input -------------------------------------------------------------------------------------------

_PNG = encode_image(_image(), "cat\nSteps: 1, Sampler: Euler, CFG scale: 7")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not an image at all", id="text"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="signature-only"),
        pytest.param(_PNG[:40], id="truncated-png"),
        pytest.param(_insert_after_ihdr(_PNG, _chunk(b"tEXt", b"parameters\x00x")[:-4] + b"\0\0\0\0"), id="bad-crc"),
        pytest.param(_insert_after_ihdr(_PNG, struct.pack(">I", 0x7FFFFFF0) + b"tEXtparameters\x00"), id="huge-length"),
        pytest.param(
            _insert_after_ihdr(_PNG, _chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"x" * (80 << 20)))),
            id="ztxt-bomb",
        ),
        pytest.param(_insert_after_ihdr(_PNG, _chunk(b"zTXt", b"parameters\x00\x00not zlib")), id="bad-ztxt"),
        pytest.param(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a", id="truncated-jpeg-exif"),
        pytest.param(b"RIFF\x10\x00\x00\x00WEBPVP8X", id="truncated-webp"),
    ],
)
def test_malformed_files_give_text_or_invalid_request(data: bytes) -> None:
    try:
        result = read_infotext(data)
    except InvalidRequestError as exc:
        assert str(exc)
    else:
        assert result in (None, "cat\nSteps: 1, Sampler: Euler, CFG scale: 7")


def test_not_an_image_message() -> None:
    with pytest.raises(InvalidRequestError, match="not an image"):
        read_infotext(b"GIF? no, just text")


def test_garbage_exif_in_jpeg_is_text_or_invalid_request() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG", exif=b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff" + b"\x00" * 20)
    try:
        assert read_infotext(buffer.getvalue()) is None
    except InvalidRequestError:
        pass


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="cannot read"):
        read_infotext(tmp_path / "missing.png")
    with pytest.raises(InvalidRequestError, match="cannot read"):
        read_infotext(tmp_path)


def test_oversized_input_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "MAX_READ_BYTES", 100)
    with pytest.raises(InvalidRequestError, match="over 100"):
        read_infotext(_PNG)


# --- naming ---------------------------------------------------------------------------------------------------


def test_next_sequence_number(tmp_path: Path) -> None:
    assert next_sequence_number(tmp_path) == 0
    for name in ("00005-1.png", "00012-3-x.jpg", "abc.png", "7.txt", ".sdlab-tmp-1.png", "-3-a.png", "00002-9.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_sequence_number(tmp_path) == 13
    (tmp_path / "grid-00040.png").write_bytes(b"")
    assert next_sequence_number(tmp_path, "grid") == 41


def test_image_file_name() -> None:
    assert image_file_name(7, 123, "png") == "00007-123.png"
    assert image_file_name(123456, -1, "jpg", "-hr") == "123456--1-hr.jpg"


def test_save_image_sequence_and_result(tmp_path: Path) -> None:
    first = save_image(_image(), tmp_path / "out", seed=42, infotext=TEXT)
    second = save_image(_image(), tmp_path / "out", seed=7, infotext="x", fmt="jpg", basename_suffix="-up")
    assert first == SavedImage(tmp_path / "out" / "00000-42.png", 42, TEXT)
    assert second.path.name == "00001-7-up.jpg"
    assert read_infotext(first.path) == TEXT and read_infotext(second.path) == "x"
    with pytest.raises(FrozenInstanceError):
        first.seed = 1  # type: ignore[misc]


def test_save_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "00000-42.png").write_bytes(b"keep me")
    monkeypatch.setattr(outputs, "next_sequence_number", lambda folder: 0)
    saved = save_image(_image(), tmp_path, seed=42, infotext=TEXT)
    assert saved.path.name == "00001-42.png"
    assert (tmp_path / "00000-42.png").read_bytes() == b"keep me"


def test_save_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(src: object, dst: object) -> None:
        raise PermissionError("hard links not supported")

    (tmp_path / "00000-1.png").write_bytes(b"keep me")
    monkeypatch.setattr(outputs, "next_sequence_number", lambda folder: 0)
    monkeypatch.setattr(os, "link", no_link)
    saved = save_image(_image(), tmp_path, seed=1, infotext=TEXT)
    assert saved.path.name == "00001-1.png" and read_infotext(saved.path) == TEXT
    assert (tmp_path / "00000-1.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-1.png", "00001-1.png"]


def test_encoder_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = Image.Image.save

    def failing_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        real_save(self, fp, *args, **kwargs)
        if hasattr(fp, "write"):
            fp.write(b"half")  # type: ignore[attr-defined]
        raise OSError("encoder died")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="encoder died"):
        save_image(_image(), tmp_path, seed=1, infotext=TEXT)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_image(_image(), tmp_path, seed=1, infotext=TEXT)
    assert list(tmp_path.iterdir()) == []


def test_bad_suffix_and_format(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="path separator"):
        save_image(_image(), tmp_path, seed=1, infotext=TEXT, basename_suffix="/../x")
    with pytest.raises(InvalidRequestError, match="unknown image format"):
        save_image(_image(), tmp_path, seed=1, infotext=TEXT, fmt="bmp")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_get_distinct_files(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    saved: list[SavedImage] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        try:
            for i in range(6):
                result = save_image(_image(size=(8, 8)), tmp_path, seed=worker, infotext=f"w{worker} i{i}")
                with lock:
                    saved.append(result)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 24 and len({s.path for s in saved}) == 24
    assert {int(n.split("-")[0]) for n in names} == set(range(24))
    for item in saved:
        assert read_infotext(item.path) == item.infotext


def test_stale_lock_from_crashed_writer_expires(tmp_path: Path) -> None:
    lock = tmp_path / outputs.LOCK_NAME
    lock.write_bytes(b"")
    os.utime(lock, (0, 0))
    saved = save_image(_image(), tmp_path, seed=3, infotext=TEXT)
    assert saved.path.name == "00000-3.png" and not lock.exists()


def test_live_lock_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / outputs.LOCK_NAME).write_bytes(b"")
    monkeypatch.setattr(outputs, "LOCK_WAIT_S", 0.0)
    with pytest.raises(InvalidRequestError, match="held by another writer"):
        save_image(_image(), tmp_path, seed=3, infotext=TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [outputs.LOCK_NAME]


def test_infotext_too_long_for_jpeg(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="too long for a JPEG"):
        save_image(_image(), tmp_path, seed=1, infotext="x" * 40000, fmt="jpg")
    assert list(tmp_path.iterdir()) == []
    saved = save_image(_image(), tmp_path, seed=1, infotext="x" * 40000, fmt="webp")
    assert read_infotext(saved.path) == "x" * 40000


def test_parameters_chunk_after_image_data() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    plain = buffer.getvalue()
    iend = plain.rindex(b"IEND") - 4
    late = plain[:iend] + _chunk(b"tEXt", b"parameters\x00late text") + plain[iend:]
    assert read_infotext(late) == "late text"
