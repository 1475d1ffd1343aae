"""Atomic PNG writes carrying generation metadata, and reading that metadata back.

``save_image`` writes a PNG with a ``parameters`` text chunk (AUTOMATIC1111 infotext) and a
compressed ``sdstudio`` iTXt chunk (the complete request and info as JSON). The write is
atomic and never replaces a file:

1. the PNG is encoded in memory (an encoder error touches no file);
2. it is written to a hidden temp file in the destination folder, flushed and fsynced;
3. under a per-folder lock (threads and processes), the next free name is chosen and claimed
   with ``os.link(temp, final)``, which fails rather than overwrite; on a collision the next
   index (or a ``-N`` suffix) is tried;
4. the temp name is removed and the folder fsynced.

Any failure removes the temp file (and the final name, if it was already claimed) before the
error propagates, so no partial or stray file is left behind.

``read_image_metadata`` reads PNG text chunks with a small chunk reader that never decodes
pixels (so decompression bombs cost nothing), checks the file's structure (truncated or
corrupt files are refused), and also reads EXIF UserComment from JPEG and WebP files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
import struct
import sys
import tempfile
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin

from sdstudio.core.errors import ImageInputError, MetadataError, SDStudioError
from sdstudio.core.metadata import (
    parse_infotext,
    parse_sdstudio_json,
    to_infotext,
    to_sdstudio_json,
)
from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.storage.naming import DEFAULT_FILENAME_PATTERN, NamePlan, next_index, plan_name

PARAMETERS_KEY = "parameters"
SDSTUDIO_KEY = "sdstudio"
LOCK_NAME = ".sdstudio.lock"
TEMP_PREFIX = ".sdstudio-"
TEMP_SUFFIX = ".tmp"
MAX_NAME_ATTEMPTS = 10_000
MAX_TEXT_BYTES = 16 * 1024 * 1024  # per text chunk, after decompression

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class StorageError(SDStudioError):
    """An image could not be written (disk full, no permission...); nothing was left behind."""


@dataclass(frozen=True)
class ImageMetadata:
    """Generation metadata read from an image file."""

    request: GenerationRequest
    info: GenerationInfo | None
    infotext: str
    extras: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_hash: str = ""
    source: str = ""  # "sdstudio", "parameters" (PNG text) or "exif" (JPEG/WebP UserComment)


# ================================================================================ writing
def encode_png(
    image: Image.Image, request: GenerationRequest, info: GenerationInfo | None
) -> bytes:
    """The PNG file's bytes, with both metadata chunks. Deterministic for equal inputs."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"save_image needs a PIL image, not {type(image).__name__}")
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text(PARAMETERS_KEY, to_infotext(request, info))  # iTXt if not latin-1
    pnginfo.add_itxt(SDSTUDIO_KEY, to_sdstudio_json(request, info), zip=True)
    return _encode(image, pnginfo)


def _encode(image: Image.Image, pnginfo: PngImagePlugin.PngInfo) -> bytes:
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def save_image(
    image: Image.Image,
    request: GenerationRequest,
    info: GenerationInfo | None,
    out_dir: str | os.PathLike[str],
    pattern: str = DEFAULT_FILENAME_PATTERN,
) -> Path:
    """Write ``image`` atomically under ``out_dir`` following ``pattern``; return its path.

    ``request`` is the request of this one image (actual seed). ``info.elapsed_s`` is not
    stored, so that repeating a generation gives a byte-identical file. Raises
    FilenamePatternError for a bad pattern, StorageError when the disk refuses the write."""
    now = datetime.now()
    plan = plan_name(pattern, request, info, now=now)  # before touching the disk
    if info is not None and info.elapsed_s:
        info = dataclasses.replace(info, elapsed_s=0.0)
    data = encode_png(image, request, info)
    root = Path(out_dir)
    return _save_new(root / plan.folder if plan.folder else root, plan, data)


def _save_new(folder: Path, plan: NamePlan, data: bytes) -> Path:
    try:
        _make_dirs(folder)
        return _write_new_file(folder, plan, data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "the disk is full"
        raise StorageError(f"Could not save the image in {folder}: {reason}", str(exc)) from exc


EXTRAS_KEY = "extras"  # AUTOMATIC1111's chunk for what its Extras tab did to an image


def save_with_texts(image: Image.Image, texts: dict[str, str], out_dir: str | os.PathLike[str],
                    stem: str) -> Path:
    """Write ``image`` atomically as ``out_dir/<stem>.png`` (``<stem>-1.png``... when taken,
    never replacing a file) with the PNG text chunks ``texts`` (the ``sdstudio`` one
    compressed). For images that keep another image's metadata (an upscaled result)."""
    pnginfo = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        if key == SDSTUDIO_KEY:
            pnginfo.add_itxt(key, value, zip=True)
        else:
            pnginfo.add_text(key, value)  # iTXt if not latin-1
    from sdstudio.storage.naming import safe_component

    plan = NamePlan("", safe_component(stem), "", False)
    return _save_new(Path(out_dir), plan, _encode(image, pnginfo))


def _make_dirs(folder: Path) -> None:
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync_dir(created.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_new_file(folder: Path, plan: NamePlan, data: bytes) -> Path:
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    tmp = Path(tmp_name)
    final: Path | None = None
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        with _folder_lock(folder):
            final, moved = _claim(folder, plan, tmp)
        if not moved:
            tmp.unlink()
        _fsync_dir(folder)
        return final
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if final is not None:
            with contextlib.suppress(OSError):
                final.unlink()
        raise


def _claim(folder: Path, plan: NamePlan, tmp: Path) -> tuple[Path, bool]:
    """Give the temp file its final name without replacing any existing file."""
    index = next_index(folder, plan)
    attempt = 0
    for _ in range(MAX_NAME_ATTEMPTS):
        final = folder / plan.name(index if plan.has_index else None, attempt=attempt)
        try:
            return final, _link_exclusive(tmp, final)
        except FileExistsError:
            if plan.has_index:
                index += 1
            else:
                attempt += 1
    raise FileExistsError(errno.EEXIST, f"no free file name after {MAX_NAME_ATTEMPTS} tries")


def _link_exclusive(tmp: Path, final: Path) -> bool:
    """Make ``final`` name the temp file's content; FileExistsError if it exists. Returns
    whether the temp name is gone (moved) rather than still there (hard-linked)."""
    try:
        os.link(tmp, final)
        return False
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise
    # File systems without hard links (FAT, some network shares): claim the name with O_EXCL,
    # then move the complete temp file onto the claimed (empty) name.
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            final.unlink()
        raise
    return True


_NO_HARDLINKS = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, None}
)


def _fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":
        return  # directories cannot be opened for fsync on Windows
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive for the folder across threads of this process and across processes."""
    key = os.path.normcase(os.path.abspath(folder))
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock, open(folder / LOCK_NAME, "a+b") as fh:
        _lock_file(fh)
        try:
            yield
        finally:
            _unlock_file(fh)


def _lock_file(fh: BinaryIO) -> None:
    if sys.platform == "win32":
        import msvcrt
        import time

        while True:
            try:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:
                time.sleep(0.05)
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _unlock_file(fh: BinaryIO) -> None:
    if sys.platform == "win32":
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ================================================================================ reading
def read_image_metadata(path: str | os.PathLike[str]) -> ImageMetadata:
    """Generation parameters stored in an image: the sdstudio chunk if present, else the
    ``parameters`` infotext (AUTOMATIC1111 and compatible PNGs), else EXIF UserComment
    (JPEG/WebP). Raises ImageInputError for a missing, unreadable, truncated or oversized
    file and MetadataError when the image carries no usable generation parameters."""
    path = Path(path)
    texts, source = read_texts(path)
    return _metadata_from_texts(texts, source, path.name)


def read_texts(path: str | os.PathLike[str]) -> tuple[dict[str, str], str]:
    """The text an image file carries, unparsed, and where it came from: every PNG text
    chunk (``"parameters"``), or a JPEG/WebP's EXIF UserComment as ``{"parameters": ...}``
    (``"exif"``). ImageInputError for a missing, unreadable, truncated or oversized file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            fh.seek(0)
            if head.startswith(PNG_SIGNATURE):
                return read_png_text(fh, name=path.name), PARAMETERS_KEY
            return _read_exif_texts(fh, path.name, head), "exif"
    except FileNotFoundError:
        raise ImageInputError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ImageInputError(f"{path} is a folder, not an image") from None
    except PermissionError:
        raise ImageInputError(f"{path} cannot be read (permission denied)") from None
    except OSError as exc:
        raise ImageInputError(f"{path} cannot be read: {exc.strerror or exc}") from exc


def _metadata_from_texts(texts: dict[str, str], source: str, name: str) -> ImageMetadata:
    infotext = texts.get(PARAMETERS_KEY, "")
    chunk = texts.get(SDSTUDIO_KEY)
    sdstudio_error: MetadataError | None = None
    if chunk is not None:
        try:
            request, info = parse_sdstudio_json(chunk)
        except MetadataError as exc:
            sdstudio_error = exc  # fall back to the infotext, if any
        else:
            extras: dict[str, str] = {}
            model_name, model_hash = info.model_name, info.model_hash
            if infotext:
                with contextlib.suppress(MetadataError):
                    parsed = parse_infotext(infotext)
                    extras = parsed.extras
            else:
                infotext = to_infotext(request, info)
            return ImageMetadata(
                request, info, infotext, extras, model_name, model_hash, source="sdstudio"
            )
    if infotext:
        try:
            parsed = parse_infotext(infotext)
        except MetadataError as exc:
            raise MetadataError(f"{name}: {exc}") from exc
        return ImageMetadata(
            parsed.request, None, infotext, parsed.extras, parsed.model_name, parsed.model_hash,
            source=source,
        )
    if sdstudio_error is not None:
        raise MetadataError(f"{name}: {sdstudio_error}") from sdstudio_error
    raise MetadataError(f"{name} has no generation parameters")


def _pixel_limit() -> int | None:
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def read_png_text(fh: BinaryIO, name: str = "image") -> dict[str, str]:
    """Every tEXt/zTXt/iTXt chunk of a PNG as {keyword: text}, without decoding pixels.

    Checks the whole chunk structure (to IEND), the IHDR and the CRC of every chunk it reads;
    raises ImageInputError for a truncated, corrupt or oversized (decompression bomb) file."""
    size = os.fstat(fh.fileno()).st_size
    if fh.read(8) != PNG_SIGNATURE:
        raise ImageInputError(f"{name} is not a PNG file")
    texts: dict[str, str] = {}
    pos = 8
    first = True
    while True:
        header = fh.read(8)
        if len(header) < 8:
            raise ImageInputError(f"{name} is truncated (no end of image)")
        length, ctype = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF or pos + 12 + length > size:
            raise ImageInputError(f"{name} is truncated or corrupt (bad chunk length)")
        if first:
            if ctype != b"IHDR" or length != 13:
                raise ImageInputError(f"{name} is corrupt (no IHDR header)")
            first = False
        wanted = ctype in (b"IHDR", b"tEXt", b"zTXt", b"iTXt", b"IEND")
        if wanted:
            data = fh.read(length)
            crc = fh.read(4)
            if len(data) < length or len(crc) < 4:
                raise ImageInputError(f"{name} is truncated")
            if zlib.crc32(ctype + data) & 0xFFFFFFFF != struct.unpack(">I", crc)[0]:
                raise ImageInputError(f"{name} is corrupt (checksum error in {ctype.decode()})")
            if ctype == b"IHDR":
                width, height = struct.unpack(">II", data[:8])
                if width == 0 or height == 0:
                    raise ImageInputError(f"{name} is corrupt (zero size)")
                limit = _pixel_limit()
                if limit is not None and width * height > limit:
                    raise ImageInputError(
                        f"{name} is {width}x{height} pixels, too large to open safely "
                        "(decompression bomb?)"
                    )
            elif ctype == b"IEND":
                return texts
            else:
                item = _decode_text_chunk(ctype, data)
                if item is not None:
                    texts.setdefault(item[0], item[1])
        else:
            fh.seek(length + 4, os.SEEK_CUR)
        pos += 12 + length


def _inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    if inflater.unconsumed_tail:
        return None  # larger than MAX_TEXT_BYTES: a zip bomb, not metadata
    return out


def _decode_text_chunk(ctype: bytes, data: bytes) -> tuple[str, str] | None:
    keyword, sep, rest = data.partition(b"\x00")
    if not sep or not keyword:
        return None
    key = keyword.decode("latin-1")
    if ctype == b"tEXt":
        return key, rest.decode("latin-1")
    if ctype == b"zTXt":
        raw = _inflate(rest[1:]) if rest[:1] == b"\x00" else None
        return None if raw is None else (key, raw.decode("latin-1"))
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        return None
    flag, method = rest[0], rest[1]
    _lang, sep1, rest = rest[2:].partition(b"\x00")
    _translated, sep2, text = rest.partition(b"\x00")
    if not (sep1 and sep2):
        return None
    if flag:
        if method != 0:
            return None
        raw = _inflate(text)
        if raw is None:
            return None
        text = raw
    return key, text.decode("utf-8", errors="replace")


_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def _decode_user_comment(value: object) -> str:
    if isinstance(value, str):
        return value.strip("\x00")
    if not isinstance(value, (bytes, bytearray)):
        return ""
    raw = bytes(value)
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        if len(body) >= 2 and body[0] != 0 and body[1] == 0:
            return body.decode("utf-16-le", errors="replace").strip("\x00")
        return body.decode("utf-16-be", errors="replace").strip("\x00")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8, b"JIS\x00\x00\x00\x00\x00"):
        return body.decode("utf-8", errors="replace").strip("\x00")
    return raw.decode("utf-8", errors="replace").strip("\x00")


def _read_exif_texts(fh: BinaryIO, name: str, head: bytes) -> dict[str, str]:
    """{"parameters": UserComment} of a JPEG/WebP (empty for other images)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as im:
                if im.format not in ("JPEG", "WEBP", "MPO", "TIFF"):
                    return {}
                exif = im.getexif()
                comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
                if comment is None:
                    comment = exif.get(_USER_COMMENT)  # Fooocus writes it in IFD0
                text = _decode_user_comment(comment)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name} is too large to open safely (decompression bomb?)") from exc
    except Image.UnidentifiedImageError:
        raise ImageInputError(f"{name} is not an image") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, KeyError) as exc:
        raise ImageInputError(f"{name} is truncated or corrupt: {exc}") from exc
    return {PARAMETERS_KEY: text} if text.strip() else {}
