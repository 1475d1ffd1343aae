"""Gallery thumbnails kept on disk, so a second start shows 10,000 images without decoding them.

An entry is keyed by the image's absolute path, byte size and modification time (and the
thumbnail side): a changed file gets a new entry, the old one ages out. Entries live in
``paths.cache_dir()/thumbnails/<2 hex>/<64 hex>.thumb`` (JPEG for opaque thumbnails, PNG
with transparency); an image that cannot be read leaves an empty ``.bad`` marker so it is not
decoded again at every start. The folder is bounded in total size: past ``max_bytes`` the
least recently used entries are removed (a hit refreshes an entry's time at most once a day).

Every file, source image or cache entry, is opened through :func:`sdstudio.core.images.
open_image` (no FIFOs or devices, header size checks against decompression bombs, truncated
files refused), and a cache entry larger than the side asked for is discarded, so nothing
placed in the cache folder can make the window decode a large image. Names in the folder are
hashes: nothing from an image becomes a path. Used from the gallery's background thread; the
counters are guarded by a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PySide6.QtGui import QImage

from sdstudio.core import paths
from sdstudio.core.errors import ImageInputError
from sdstudio.core.images import open_image
from sdstudio.ui.imageutil import pil_to_qimage, qimage_to_pil

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
PRUNE_TO = 0.8  # pruning leaves the cache at this fraction of max_bytes
TOUCH_AFTER_S = 24 * 3600  # a hit refreshes an entry's time when it is older than this
_ENTRY = re.compile(r"^[0-9a-f]{64}\.(thumb|bad)$")
_SUBDIR = re.compile(r"^[0-9a-f]{2}$")
_TEMP = re.compile(r"^\.[^/]*\.tmp$")


def default_folder() -> Path:
    return paths.cache_dir() / "thumbnails"


@dataclass
class CacheStats:
    hits: int = 0  # thumbnails read from the cache
    made: int = 0  # thumbnails decoded from their image (and stored)
    failed: int = 0  # images that could not be read (or a known-bad marker was found)


class ThumbCache:
    """Thumbnails of image files, made once and kept on disk within ``max_bytes``."""

    def __init__(self, folder: Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = Path(folder) if folder is not None else default_folder()
        self.max_bytes = max(0, int(max_bytes))
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes in the folder; known after the first prune

    # ------------------------------------------------------------------ keys
    def entry_path(self, path: str | os.PathLike[str], side: int) -> Path | None:
        """Where the thumbnail of ``path`` at ``side`` is kept; None when the file cannot be
        looked at (gone, not a regular file)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.path.isfile(path):
            return None
        key = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{int(side)}"
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.thumb"

    # ------------------------------------------------------------------ reading
    def get(self, path: str | os.PathLike[str], side: int) -> QImage | None:
        """The cached thumbnail of ``path``, a null QImage when the image is known to be
        unreadable, or None when nothing is cached."""
        entry = self.entry_path(path, side)
        if entry is None:
            return None
        return self._read_entry(entry, side)

    def thumbnail(self, path: str | os.PathLike[str], side: int) -> QImage:
        """The thumbnail of ``path`` (at most ``side`` pixels per side): from the cache, or
        decoded from the image and stored. A null QImage when the image cannot be read."""
        entry = self.entry_path(path, side)
        if entry is None:
            self._count("failed")
            return QImage()
        cached = self._read_entry(entry, side)
        if cached is not None:
            return cached
        try:
            source = open_image(path, "image")
        except ImageInputError:
            self._count("failed")
            self._write(entry.with_suffix(".bad"), b"")
            return QImage()
        thumb = _shrink(source, side)
        self._store(entry, thumb)
        self._count("made")
        return pil_to_qimage(thumb)

    def put(self, path: str | os.PathLike[str], side: int, image: QImage) -> QImage:
        """Store a thumbnail of ``image`` (the pixels of the file ``path``, e.g. a result
        just saved) and return it, so the file need not be decoded again."""
        thumb = _shrink(qimage_to_pil(image), side)
        entry = self.entry_path(path, side)
        if entry is not None:
            self._store(entry, thumb)
        return pil_to_qimage(thumb)

    def _read_entry(self, entry: Path, side: int) -> QImage | None:
        bad = entry.with_suffix(".bad")
        if bad.is_file():
            self._count("failed")
            return QImage()
        try:
            st = entry.stat()
        except OSError:
            return None
        try:
            image = open_image(entry, "thumbnail")
        except ImageInputError:
            self._discard(entry)
            return None
        if max(image.size) > side:  # not one of ours: never show or keep it
            self._discard(entry)
            return None
        if time.time() - st.st_mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(entry)
        self._count("hits")
        return pil_to_qimage(image)

    # ------------------------------------------------------------------ writing
    def _store(self, entry: Path, thumb: Image.Image) -> None:
        buffer = io.BytesIO()
        if thumb.mode == "RGBA":
            thumb.save(buffer, format="PNG", compress_level=3)
        else:
            thumb.convert("RGB").save(buffer, format="JPEG", quality=88)
        self._write(entry, buffer.getvalue())

    def _write(self, target: Path, data: bytes) -> None:
        """Write atomically (temporary file in the same folder, then rename; no fsync: a
        torn entry after a crash is refused when read, and dropped); a full or read-only
        disk only means no cache."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=target.parent)
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        with self._lock:
            total = self._total
            if total is not None:
                self._total = total + len(data)
        if total is None or total + len(data) > self.max_bytes:
            self.prune()

    def _discard(self, entry: Path) -> None:
        with contextlib.suppress(OSError):
            entry.unlink()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    # ------------------------------------------------------------------ size bound
    def size(self) -> int:
        """Bytes the cache's entries take now."""
        return sum(size for _, size, _ in self._entries())

    def prune(self) -> int:
        """Remove the least recently used entries while the cache is over ``max_bytes``
        (down to 80 % of it). Returns the bytes removed. Only files named as entries are
        touched; links and anything else in the folder are left alone."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        if total > self.max_bytes:
            goal = int(self.max_bytes * PRUNE_TO)
            for _, size, path in sorted(entries):
                if total - removed <= goal:
                    break
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed += size
        with self._lock:
            self._total = total - removed
        return removed

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every entry in the folder."""
        out: list[tuple[float, int, str]] = []
        try:
            subdirs = [d for d in os.scandir(self.folder)
                       if _SUBDIR.match(d.name) and d.is_dir(follow_symlinks=False)]
        except OSError:
            return out
        for sub in subdirs:
            try:
                files = list(os.scandir(sub.path))
            except OSError:
                continue
            for f in files:
                try:
                    if _ENTRY.match(f.name) and f.is_file(follow_symlinks=False):
                        st = f.stat(follow_symlinks=False)
                        out.append((st.st_mtime, st.st_size, f.path))
                    elif _TEMP.match(f.name) and f.is_file(follow_symlinks=False) and \
                            time.time() - f.stat(follow_symlinks=False).st_mtime > 3600:
                        os.unlink(f.path)  # left by a write that was cut off
                except OSError:
                    continue
        return out


def _shrink(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled to fit ``side`` x ``side`` (never enlarged), as RGB or RGBA."""
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    out = image.convert("RGBA" if has_alpha else "RGB")
    if out is image:
        out = image.copy()
    out.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return out
