"""imageutil: exact PIL <-> QImage round trips, safe loading, content-addressed input files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QColor, QImage

from sdstudio.core import images as core_images
from sdstudio.core import paths
from sdstudio.core.errors import ImageInputError
from sdstudio.ui.imageutil import (
    array_to_qimage,
    load_image_file,
    pil_to_qimage,
    qimage_to_array,
    qimage_to_pil,
    save_input_image,
)

RNG = np.random.default_rng(1234)


def _random(mode: str, w: int = 7, h: int = 5) -> np.ndarray:
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
@pytest.mark.parametrize("width", [1, 5, 7, 64])  # odd widths exercise QImage row padding
def test_round_trip_is_exact(mode: str, width: int) -> None:
    arr = _random(mode, w=width)
    q = pil_to_qimage(Image.fromarray(arr, mode))
    assert (q.width(), q.height()) == (width, 5)
    back = qimage_to_pil(q)
    assert back.mode == mode
    np.testing.assert_array_equal(np.asarray(back), arr)


def test_pil_to_qimage_pixel_values() -> None:
    img = Image.new("RGBA", (3, 2), (10, 20, 30, 40))
    img.putpixel((2, 1), (200, 150, 100, 255))
    q = pil_to_qimage(img)
    assert q.pixelColor(0, 0) == QColor(10, 20, 30, 40)
    assert q.pixelColor(2, 1) == QColor(200, 150, 100, 255)


def test_pil_to_qimage_is_a_deep_copy() -> None:
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    q = pil_to_qimage(img)
    img.putpixel((0, 0), (255, 255, 255))
    del img
    assert q.pixelColor(0, 0) == QColor(1, 2, 3)


def test_qimage_formats_convert_to_pil() -> None:
    q = QImage(3, 3, QImage.Format.Format_ARGB32)
    q.fill(QColor(5, 6, 7, 128))
    assert qimage_to_pil(q).mode == "RGBA"
    assert qimage_to_pil(q).getpixel((1, 1)) == (5, 6, 7, 128)
    q2 = QImage(3, 3, QImage.Format.Format_RGB32)
    q2.fill(QColor(5, 6, 7))
    assert qimage_to_pil(q2).mode == "RGB"
    assert qimage_to_pil(q2).getpixel((2, 2)) == (5, 6, 7)


def test_other_pil_modes_are_normalised() -> None:
    assert pil_to_qimage(Image.new("P", (2, 2))).format() == QImage.Format.Format_RGB888
    la = Image.new("LA", (2, 2), (9, 100))
    assert qimage_to_pil(pil_to_qimage(la)).getpixel((0, 0)) == (9, 9, 9, 100)
    i16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert qimage_to_pil(pil_to_qimage(i16)).getpixel((0, 0)) == 255


def test_array_helpers_round_trip() -> None:
    arr = _random("L", w=9, h=4)
    q = array_to_qimage(arr)
    assert q.format() == QImage.Format.Format_Grayscale8
    np.testing.assert_array_equal(qimage_to_array(q), arr)


# ------------------------------------------------------------------------------ loading
def test_load_png(tmp_path: Path) -> None:
    arr = _random("RGB", 11, 6)
    Image.fromarray(arr).save(tmp_path / "a.png")
    q = load_image_file(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(qimage_to_pil(q)), arr)


def test_load_keeps_transparency(tmp_path: Path) -> None:
    arr = _random("RGBA", 4, 4)
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    q = load_image_file(str(tmp_path / "a.png"))
    assert q.hasAlphaChannel()
    np.testing.assert_array_equal(np.asarray(qimage_to_pil(q)), arr)


def test_load_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "o.jpg", exif=exif.tobytes())
    q = load_image_file(tmp_path / "o.jpg")
    assert (q.width(), q.height()) == (2, 4)


def test_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not a picture\n")
    with pytest.raises(ImageInputError, match="not an image"):
        load_image_file(p)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="not found"):
        load_image_file(tmp_path / "nope.png")
    with pytest.raises(ImageInputError, match="folder"):
        load_image_file(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(_random("RGB", 64, 64)).save(p, format=fmt)
    data = p.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageInputError, match="damaged or truncated") as info:
        load_image_file(cut)
    assert "\n" not in str(info.value)


def _png_claiming_size(path: Path, w: int, h: int) -> None:
    """A tiny valid PNG whose header is patched to claim w×h pixels (a decompression bomb)."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_decompression_bomb_header(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    _png_claiming_size(p, 100_000, 100_000)
    with pytest.raises(ImageInputError, match="too large"):
        load_image_file(p)


def test_decompression_bomb_limit_is_enforced(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(p)
    monkeypatch.setattr(core_images, "MAX_INPUT_PIXELS", 200 * 200)
    with pytest.raises(ImageInputError, match="too large"):
        load_image_file(p)
    monkeypatch.setattr(core_images, "MAX_INPUT_PIXELS", 300 * 300)
    assert load_image_file(p).width() == 300


# ------------------------------------------------------------------------------ saving
def test_save_input_image_is_content_addressed(sdstudio_home: Path) -> None:
    arr = _random("RGB", 16, 8)
    p1 = save_input_image(Image.fromarray(arr), "init")
    p2 = save_input_image(pil_to_qimage(Image.fromarray(arr)), "init")
    assert p1 == p2
    assert p1.parent == paths.inputs_dir()
    assert p1.name.startswith("init-") and p1.suffix == ".png"
    with Image.open(p1) as im:
        np.testing.assert_array_equal(np.asarray(im), arr)
    other = arr.copy()
    other[0, 0, 0] ^= 1
    assert save_input_image(Image.fromarray(other), "init") != p1
    assert not list(p1.parent.glob("*.tmp"))


def test_save_input_image_is_idempotent(sdstudio_home: Path) -> None:
    img = Image.fromarray(_random("RGBA", 5, 5), "RGBA")
    p = save_input_image(img, "init")
    mtime = p.stat().st_mtime_ns
    assert save_input_image(img, "init") == p
    assert p.stat().st_mtime_ns == mtime


def test_save_mask_is_grayscale(sdstudio_home: Path) -> None:
    arr = _random("L", 12, 10)
    p = save_input_image(array_to_qimage(arr), "mask")
    with Image.open(p) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), arr)


def test_save_rejects_bad_kind() -> None:
    with pytest.raises(ValueError):
        save_input_image(Image.new("RGB", (2, 2)), "../evil")
