"""The gallery's disk thumbnail cache (issue 17, item 5): made once, read back on the next
start, a new entry when the file changes, bounded in size, and safe against hostile files
(source images and whatever is put in the cache folder)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QColor, QImage

from sdstudio.ui import thumb_cache
from sdstudio.ui.thumb_cache import ThumbCache


def _save(path: Path, size: tuple[int, int] = (300, 200), color: tuple[int, ...] = (200, 30, 30),
          mode: str = "RGB") -> str:
    Image.new(mode, size, color).save(path)
    return str(path)


def _noise(path: Path, seed: int, side: int = 200) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_made_once_then_read_back_by_the_next_start(tmp_path: Path) -> None:
    src = _save(tmp_path / "cat.png")
    first = ThumbCache(tmp_path / "cache")
    thumb = first.thumbnail(src, 150)
    assert (thumb.width(), thumb.height()) == (150, 100)  # fits 150, aspect kept
    assert first.stats.made == 1 and first.stats.hits == 0
    again = ThumbCache(tmp_path / "cache")  # the next start
    cached = again.thumbnail(src, 150)
    assert again.stats.hits == 1 and again.stats.made == 0
    assert cached.size() == thumb.size()
    red = cached.pixelColor(75, 50)
    assert abs(red.red() - 200) < 6 and red.green() < 40  # JPEG, near the colour
    assert again.thumbnail(src, 64).width() == 64 and again.stats.made == 1  # per side


def test_a_changed_file_gets_a_new_entry(tmp_path: Path) -> None:
    src = tmp_path / "cat.png"
    _save(src)
    cache = ThumbCache(tmp_path / "cache")
    old = cache.entry_path(src, 150)
    cache.thumbnail(src, 150)
    _save(src, (100, 300), (0, 0, 255))
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.entry_path(src, 150) != old
    thumb = cache.thumbnail(src, 150)
    assert (thumb.width(), thumb.height()) == (50, 150) and cache.stats.made == 2
    assert thumb.pixelColor(25, 75).blue() > 200


def test_transparency_is_kept(tmp_path: Path) -> None:
    src = _save(tmp_path / "glass.png", (80, 80), (0, 255, 0, 0), "RGBA")
    cache = ThumbCache(tmp_path / "cache")
    cache.thumbnail(src, 150)
    thumb = ThumbCache(tmp_path / "cache").thumbnail(src, 150)
    assert thumb.hasAlphaChannel() and thumb.pixelColor(40, 40).alpha() == 0
    entry = cache.entry_path(src, 150)
    assert entry is not None and entry.read_bytes().startswith(b"\x89PNG")


def test_put_stores_the_pixels_at_hand(tmp_path: Path) -> None:
    src = _save(tmp_path / "new.png", (64, 64))
    image = QImage(64, 64, QImage.Format.Format_RGB32)
    image.fill(QColor("yellow"))
    cache = ThumbCache(tmp_path / "cache")
    assert cache.put(src, 32, image).width() == 32
    again = ThumbCache(tmp_path / "cache")
    got = again.get(src, 32)
    assert got is not None and again.stats.hits == 1
    assert got.pixelColor(16, 16).green() > 200 and got.pixelColor(16, 16).blue() < 60


def _bomb_png(path: Path, side: int) -> None:
    """A valid PNG header announcing side x side pixels, with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))


def test_hostile_images_give_no_thumbnail_and_are_not_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    _bomb_png(folder / "bomb.png", 60_000)
    (folder / "text.png").write_text("not an image")
    good = _save(folder / "good.png")
    (folder / "cut.png").write_bytes(Path(good).read_bytes()[:60])
    os.mkfifo(folder / "fifo.png")
    cache = ThumbCache(tmp_path / "cache")
    for name in ("bomb.png", "text.png", "cut.png", "fifo.png"):
        assert cache.thumbnail(folder / name, 150).isNull(), name
    assert cache.stats.failed == 4 and cache.stats.made == 0
    assert cache.entry_path(folder / "fifo.png", 150) is None  # never opened

    opened: list[str] = []
    real = thumb_cache.open_image
    monkeypatch.setattr(thumb_cache, "open_image",
                        lambda path, what="image": opened.append(Path(path).name) or real(path))
    again = ThumbCache(tmp_path / "cache")
    for name in ("bomb.png", "text.png", "cut.png"):
        assert again.thumbnail(folder / name, 150).isNull()
        assert again.get(folder / name, 150) is not None  # known bad: a null image
    assert opened == [] and again.stats.failed == 6  # the markers: not decoded again


def test_an_entry_planted_in_the_cache_is_refused(tmp_path: Path) -> None:
    src = _save(tmp_path / "cat.png")
    cache = ThumbCache(tmp_path / "cache")
    entry = cache.entry_path(src, 150)
    assert entry is not None
    entry.parent.mkdir(parents=True)
    Image.new("RGB", (2000, 2000), (0, 0, 0)).save(entry, format="JPEG")  # too large
    assert cache.get(src, 150) is None and not entry.exists()
    entry.write_bytes(b"garbage")
    assert cache.get(src, 150) is None and not entry.exists()
    assert cache.thumbnail(src, 150).width() == 150 and cache.stats.made == 1


def test_the_cache_stays_within_its_size_and_keeps_the_newest(tmp_path: Path) -> None:
    limit = 60_000
    cache = ThumbCache(tmp_path / "cache", max_bytes=limit)
    foreign = tmp_path / "cache" / "ab"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")  # not an entry: left alone
    (tmp_path / "cache" / "ab" / ("0" * 64 + ".thumb")).symlink_to(foreign / "notes.txt")
    sources = [_noise(tmp_path / f"n{i}.png", i) for i in range(30)]
    for i, src in enumerate(sources):
        cache.thumbnail(src, 150)
        entry = cache.entry_path(src, 150)
        assert entry is not None
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))  # written in this order
    assert cache.size() <= limit
    assert (foreign / "notes.txt").read_text() == "mine"
    assert cache.get(sources[-1], 150) is not None  # the newest is kept
    assert cache.get(sources[0], 150) is None  # the oldest went
