"""Image output files as A1111 writes them, and reading their infotext back.

PNG carries the infotext in a ``parameters`` text chunk; JPEG and WebP in the EXIF UserComment
(``UNICODE\\0`` + UTF-16 big-endian), laid out byte for byte as ``piexif.dump`` does. Files are named like
A1111 (``00012-<seed>.png``), written to a temporary file in the target folder and published under a
name that did not exist before (a hard link, or an ``O_EXCL`` reservation), so no reader ever sees a
half-written file and no file is ever overwritten; a short-lived lock file in the folder makes concurrent
writers take distinct sequence numbers.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from sdlab.errors import InvalidRequestError
from sdlab.registry import Registry

#: Largest file :func:`read_infotext` accepts (bytes).
MAX_READ_BYTES = 256 * 1024 * 1024
JPEG_QUALITY = 80  # A1111 default "jpeg_quality"
MAX_NAME_ATTEMPTS = 500  # A1111 tries 500 consecutive numbers too
LOCK_NAME = ".sdlab-lock"
LOCK_WAIT_S = 30.0
LOCK_STALE_S = 10.0

EXIF_USER_COMMENT = 0x9286
EXIF_IFD_POINTER = 0x8769
_UNICODE_PREFIX = b"UNICODE\x00"
_COMMENT_ENCODINGS = {b"ASCII\x00\x00\x00": "ascii", b"JIS\x00\x00\x00\x00\x00": "shift_jis", _UNICODE_PREFIX: "utf_16_be"}


@dataclass(frozen=True)
class SavedImage:
    """A written image file with the seed and infotext it was saved with."""

    path: Path
    seed: int
    infotext: str


@dataclass(frozen=True)
class ImageFormat:
    """How one output format is encoded: file extension, Pillow format name and writable modes."""

    extension: str
    pillow_format: str
    modes: frozenset[str]


_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "P", "RGB", "RGBA"})
_JPEG_MODES = frozenset({"L", "RGB", "CMYK"})

#: Output formats by name (``jpeg`` and ``.png``-style spellings are aliases).
FORMATS: Registry[ImageFormat] = Registry.of(
    "image format",
    [
        ("png", ImageFormat("png", "PNG", _PNG_MODES)),
        ("jpg", ImageFormat("jpg", "JPEG", _JPEG_MODES)),
        ("webp", ImageFormat("webp", "WEBP", frozenset({"RGB", "RGBA"}))),
    ],
    aliases=[("jpeg", "jpg"), (".png", "png"), (".jpg", "jpg"), (".jpeg", "jpg"), (".webp", "webp")],
)


# --- EXIF -------------------------------------------------------------------------------------------


def user_comment(text: str) -> bytes:
    """``piexif.helper.UserComment.dump(text, encoding="unicode")``."""
    return _UNICODE_PREFIX + text.encode("utf_16_be", errors="replace")


def exif_with_user_comment(text: str) -> bytes:
    """``piexif.dump({"Exif": {UserComment: user_comment(text)}})``: big-endian TIFF, two IFDs.

    Layout: ``Exif\\0\\0``, TIFF header (``MM``, first IFD at 8); IFD0 with one entry pointing to the
    Exif IFD at 26 and a zero next-IFD link; the Exif IFD with the UserComment entry (type UNDEFINED,
    value at 40) and, as piexif writes it, no next-IFD link; then the comment bytes.
    """
    comment = user_comment(text)  # always > 4 bytes (8-byte prefix), so stored at an offset
    ifd0 = struct.pack(">HHHII", 1, EXIF_IFD_POINTER, 4, 1, 26) + b"\x00\x00\x00\x00"
    exif_ifd = struct.pack(">HHHII", 1, EXIF_USER_COMMENT, 7, len(comment), 40)
    return b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + ifd0 + exif_ifd + comment


def decode_user_comment(raw: bytes) -> str:
    """A UserComment as A1111 reads it: by its 8-byte code prefix, else as UTF-8 ignoring errors."""
    encoding = _COMMENT_ENCODINGS.get(raw[:8]) if len(raw) >= 8 else None
    if encoding is None:
        return raw.decode("utf8", errors="ignore")
    return raw[8:].decode(encoding, errors="replace")


def _jpeg_with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """Insert an APP1 Exif segment the way ``piexif.insert`` does (it takes the place of a JFIF APP0)."""
    if len(exif) + 2 > 0xFFFF:
        raise InvalidRequestError(f"infotext too long for a JPEG EXIF segment ({len(exif)} bytes); save as PNG")
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    if jpeg[2:4] == b"\xff\xe0":
        app0_end = 4 + struct.unpack(">H", jpeg[4:6])[0]
        return jpeg[:2] + app1 + jpeg[app0_end:]
    return jpeg[:2] + app1 + jpeg[2:]


# --- encoding ---------------------------------------------------------------------------------------


def _image_format(fmt: str) -> ImageFormat:
    return FORMATS.get(fmt)  # raises InvalidRequestError listing the formats


_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _convert_for(image: Image.Image, spec: ImageFormat) -> Image.Image:
    """Bring an image into a mode the format can store (A1111: RGBA -> RGB, 16-bit -> 8-bit for JPEG/WebP)."""
    if image.mode in spec.modes:
        return image
    if image.mode in _WIDE_INT_MODES:
        wide = image.convert("I")  # Pillow converts every 16-bit layout to I correctly
        if spec.pillow_format == "PNG":
            return wide.convert("I;16")
        eight_bit = wide.point(lambda v: v * (255 / 65535)).convert("L")
        return eight_bit if "L" in spec.modes else eight_bit.convert("RGB")
    if image.mode in ("LA", "La") and "L" in spec.modes:
        return image.convert("L")
    has_alpha = "A" in image.mode or "transparency" in image.info
    return image.convert("RGBA" if has_alpha and "RGBA" in spec.modes else "RGB")


def encode_image(image: Image.Image, infotext: str, fmt: str = "png") -> bytes:
    """The file bytes A1111 would write for ``image`` with ``infotext``."""
    spec = _image_format(fmt)
    image = _convert_for(image, spec)
    buffer = io.BytesIO()
    if spec.pillow_format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    exif = exif_with_user_comment(infotext)
    if spec.pillow_format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return _jpeg_with_exif(buffer.getvalue(), exif)
    image.save(buffer, format="WEBP", quality=JPEG_QUALITY, lossless=False, exif=exif)
    return buffer.getvalue()


# --- file naming and atomic publication ---------------------------------------------------------------


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """A1111 ``get_next_sequence_number``: 1 + the largest integer file-name prefix (0 in an empty folder).

    The prefix is the part of the name (after ``basename-``, without extension) before the first ``-``.
    """
    prefix = f"{basename}-" if basename else ""
    largest = -1
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix) :])[0].split("-")[0]
        try:
            largest = max(largest, int(first))
        except ValueError:
            continue
    return largest + 1


def image_file_name(number: int, seed: int, extension: str, suffix: str = "") -> str:
    """A1111's default file name: ``{number:05}-{seed}{suffix}.{extension}``."""
    return f"{number:05}-{seed}{suffix}.{extension}"


def _write_temp(folder: Path, data: bytes, extension: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=".sdlab-tmp-", suffix=f".{extension}", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _publish(temp: Path, target: Path) -> bool:
    """Give ``temp`` the name ``target`` only if ``target`` does not exist; False if it does."""
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system: reserve the name, then replace the placeholder
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        os.replace(temp, target)
        return True
    temp.unlink()
    return True


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """A lock file created with ``O_EXCL``; one left behind by a crashed writer expires after LOCK_STALE_S."""
    lock = folder / LOCK_NAME
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            _expire_stale_lock(lock)
            if time.monotonic() > deadline:
                raise InvalidRequestError(f"{lock} is held by another writer; remove it if no sdlab is running")
            time.sleep(0.005)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _expire_stale_lock(lock: Path) -> None:
    try:
        if time.time() - lock.stat().st_mtime > LOCK_STALE_S:
            lock.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def save_image(
    image: Image.Image,
    folder: Path,
    *,
    seed: int,
    infotext: str,
    fmt: str = "png",
    basename_suffix: str = "",
) -> SavedImage:
    """Write ``image`` with ``infotext`` into ``folder`` under the next free A1111-style name.

    Never overwrites a file and never leaves a partial one: if encoding fails nothing is written.
    """
    spec = _image_format(fmt)
    if os.sep in basename_suffix or (os.altsep and os.altsep in basename_suffix):
        raise InvalidRequestError(f"basename_suffix {basename_suffix!r} must not contain a path separator")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = encode_image(image, infotext, fmt)
    temp = _write_temp(folder, data, spec.extension)
    try:
        with _folder_lock(folder):  # one number per file even when several writers share the folder
            number = next_sequence_number(folder)
            for attempt in range(MAX_NAME_ATTEMPTS):
                target = folder / image_file_name(number + attempt, seed, spec.extension, basename_suffix)
                if _publish(temp, target):
                    return SavedImage(target, seed, infotext)
    finally:
        temp.unlink(missing_ok=True)
    raise InvalidRequestError(f"no free file name in {folder} after {MAX_NAME_ATTEMPTS} attempts; clean the folder")


# --- reading ------------------------------------------------------------------------------------------

#: What Pillow may raise on a malformed file; every one becomes an InvalidRequestError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  zlib.error, Image.DecompressionBombError, UnicodeDecodeError)  # fmt: skip


def _load_bytes(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_READ_BYTES:
                raise InvalidRequestError(f"{path} is {size} bytes; images over {MAX_READ_BYTES} are not read")
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequestError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_READ_BYTES:
        raise InvalidRequestError(f"image data is {len(data)} bytes; over {MAX_READ_BYTES} is not read")
    return data


def _exif_comment(image: Image.Image) -> str:
    raw = image.getexif().get_ifd(EXIF_IFD_POINTER).get(EXIF_USER_COMMENT, b"")
    if isinstance(raw, str):
        raw = raw.encode("utf8", errors="ignore")
    return decode_user_comment(bytes(raw)) if raw else ""


def read_infotext(source: str | os.PathLike[str] | bytes) -> str | None:
    """The infotext of an image file (path or bytes), as A1111 reads it; None if it has none.

    The PNG ``parameters`` text is used, replaced by a non-empty EXIF UserComment (JPEG, WebP, PNG eXIf).
    Raises InvalidRequestError for a file that is not a readable image.
    """
    data = _load_bytes(source)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "PNG" and "parameters" not in image.info:
                image.load()  # text chunks after the image data are read only with the pixels
            text = image.info.get("parameters")
            comment = _exif_comment(image)
    except Image.UnidentifiedImageError as exc:
        raise InvalidRequestError("not an image file Pillow can read (expected PNG, JPEG or WebP)") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidRequestError(f"the image file is truncated or its metadata is corrupt: {exc}") from exc
    if comment:
        text = comment
    return str(text) if isinstance(text, str) else None
