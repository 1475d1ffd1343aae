"""Conversions between PIL and Qt images, safe image loading and content-addressed inputs.

Everything here is pure data handling (PIL, numpy, Qt's QImage); no widgets are created, so it
works without a QApplication.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtGui import QImage

from sdstudio.core import paths
from sdstudio.core.errors import ImageInputError
from sdstudio.core.files import write_atomic
from sdstudio.core.images import open_image

_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


# --------------------------------------------------------------------------------------------
# PIL <-> QImage
# --------------------------------------------------------------------------------------------
def _normalise_mode(img: Image.Image) -> Image.Image:
    """Bring any PIL mode to one of RGB, RGBA or L without losing transparency."""
    if img.mode in ("RGB", "RGBA", "L"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        if arr.dtype.kind == "f":
            out = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255)
        else:
            out = np.clip(arr.astype(np.int64) >> 8, 0, 255)
        return Image.fromarray(out.astype(np.uint8), "L")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        return img.convert("RGBA")
    return img.convert("RGB")


def pil_to_qimage(img: Image.Image) -> QImage:
    """A deep copy of ``img`` as a QImage (RGB888, RGBA8888 or Grayscale8); exact pixel values."""
    img = _normalise_mode(img)
    fmt = {
        "RGB": QImage.Format.Format_RGB888,
        "RGBA": QImage.Format.Format_RGBA8888,
        "L": QImage.Format.Format_Grayscale8,
    }[img.mode]
    data = img.tobytes()
    w, h = img.size
    stride = w * len(img.getbands())
    # QImage over a Python buffer does not own it: copy() detaches into Qt-owned memory.
    return QImage(data, w, h, stride, fmt).copy()


def qimage_to_pil(img: QImage) -> Image.Image:
    """A PIL image (L for grayscale, RGBA when ``img`` has alpha, else RGB) with exact values."""
    if img.isNull():
        raise ImageInputError("The image is empty.")
    fmt = img.format()
    if fmt in (QImage.Format.Format_Grayscale8, QImage.Format.Format_Alpha8):
        src, mode, channels = img, "L", 1
        if fmt == QImage.Format.Format_Alpha8:
            src = img.convertToFormat(QImage.Format.Format_Grayscale8)
    elif img.hasAlphaChannel():
        src, mode, channels = img.convertToFormat(QImage.Format.Format_RGBA8888), "RGBA", 4
    else:
        src, mode, channels = img.convertToFormat(QImage.Format.Format_RGB888), "RGB", 3
    w, h = src.width(), src.height()
    stride = src.bytesPerLine()
    buf = np.frombuffer(src.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    arr = buf[:, : w * channels].reshape(h, w, channels) if channels > 1 else buf[:, :w]
    return Image.fromarray(arr.copy(), mode)  # a copy: the view dies with src


def qimage_to_array(img: QImage) -> np.ndarray:
    """A Grayscale8 QImage as a (h, w) uint8 array (a copy)."""
    src = img
    if src.format() != QImage.Format.Format_Grayscale8:
        src = img.convertToFormat(QImage.Format.Format_Grayscale8)
    h, w, stride = src.height(), src.width(), src.bytesPerLine()
    buf = np.frombuffer(src.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    return buf[:, :w].copy()


def array_to_qimage(arr: np.ndarray) -> QImage:
    """A (h, w) uint8 array as a Grayscale8 QImage (a copy)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape
    return QImage(arr.tobytes(), w, h, w, QImage.Format.Format_Grayscale8).copy()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def open_image_safely(path: str | Path) -> Image.Image:
    """Open, verify and fully decode an image file (sdstudio.core.images.open_image: refuses
    non-images, truncated files and decompression bombs with ImageInputError); applies the EXIF
    orientation and returns an RGB, RGBA or L image."""
    image = open_image(path, "image")
    out = _normalise_mode(image)
    return out if out is not image else image


def load_image_file(path: str | Path) -> QImage:
    """Load an image file safely as a QImage (see :func:`open_image_safely`)."""
    return pil_to_qimage(open_image_safely(path))


# --------------------------------------------------------------------------------------------
# Saving inputs for requests
# --------------------------------------------------------------------------------------------
def save_input_image(img: QImage | Image.Image, kind: str) -> Path:
    """Write ``img`` as a PNG under ``paths.inputs_dir()`` named by its content hash.

    ``kind`` prefixes the name (``"init"``, ``"mask"``). The write is atomic (temporary file in
    the same folder, fsync, rename) and idempotent: the same pixels give the same path, and an
    existing file is never rewritten. Masks (``kind="mask"``) are stored as 8-bit grayscale.
    """
    if not _KIND.match(kind):
        raise ValueError(f"bad input kind {kind!r}")
    pil = qimage_to_pil(img) if isinstance(img, QImage) else _normalise_mode(img)
    if kind == "mask" and pil.mode != "L":
        pil = pil.convert("L")
    digest = hashlib.sha256()
    digest.update(f"{pil.mode}:{pil.width}x{pil.height}:".encode())
    digest.update(pil.tobytes())
    folder = paths.inputs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{kind}-{digest.hexdigest()[:32]}.png"
    if target.is_file() and target.stat().st_size > 0:
        return target
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=4)
    return write_atomic(target, buffer.getvalue(), prefix=f".{kind}-")
