"""The mask canvas's painting rules without widgets: the brush and its strokes, the overlay's
colours, and reading and writing mask files.

Nothing here imports Qt (numpy and PIL only), like :mod:`sdstudio.ui.canvas.mask_model`, which
holds the mask itself and paints the capsule segments. :class:`MaskBrush` turns a stream of
pointer positions (in image pixels, with pen pressure) into those segments;
:class:`MaskOverlay` keeps the translucent colour shown over the image up to date, one changed
box at a time, optionally blurred as the engine will blur the mask.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from sdstudio.core.errors import ImageInputError
from sdstudio.ui.canvas.mask_model import BBox, MaskModel

MIN_BRUSH = 1
MAX_BRUSH = 1024
DEFAULT_BRUSH = 48
DEFAULT_HARDNESS = 0.8
MAX_BLUR_PREVIEW = 64
MASK_RGB = (236, 44, 96)  # overlay colour of masked pixels
MASK_OPACITY = 0.55
SIZE_STEP = 1.15  # [ and ] scale the brush by this factor (at least one pixel)
SLIDER_STEPS = 1000  # the size slider is logarithmic: 1 px .. MAX_BRUSH px


def size_to_slider(size: int) -> int:
    return round(math.log(max(1, size)) / math.log(MAX_BRUSH) * SLIDER_STEPS)


def slider_to_size(v: int) -> int:
    return max(MIN_BRUSH, min(MAX_BRUSH, round(MAX_BRUSH ** (v / SLIDER_STEPS))))


def expand(b: BBox, pad: int, w: int, h: int) -> BBox:
    """``b`` grown by ``pad`` pixels on every side, clipped to a ``w`` × ``h`` image."""
    return (max(0, b[0] - pad), max(0, b[1] - pad), min(w, b[2] + pad), min(h, b[3] + pad))


def _same(a: float, b: float) -> bool:
    # as Qt compares two QPointF coordinates (qFuzzyCompare, or qFuzzyIsNull near zero)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


class MaskBrush:
    """Brush size, hardness and eraser, and the stroke in progress on a :class:`MaskModel`.

    Points are image pixels. Each move paints one capsule from the previous point, its radius
    following the pen pressure (0 means "no pressure reported": full size).
    """

    def __init__(self, model: MaskModel) -> None:
        self.model = model
        self.size = DEFAULT_BRUSH
        self.hardness = DEFAULT_HARDNESS
        self.eraser = False
        self._erase = False
        self._last: tuple[float, float, float] | None = None  # x, y, pressure

    # ------------------------------------------------------------------ settings
    def set_size(self, px: float) -> bool:
        """Diameter in image pixels, clamped to 1..1024. Returns whether it changed."""
        size = max(MIN_BRUSH, min(MAX_BRUSH, round(px)))
        if size == self.size:
            return False
        self.size = size
        return True

    def set_hardness(self, h: float) -> bool:
        h = min(1.0, max(0.0, float(h)))
        if abs(h - self.hardness) < 1e-9:
            return False
        self.hardness = h
        return True

    def set_eraser(self, on: bool) -> bool:
        on = bool(on)
        if on == self.eraser:
            return False
        self.eraser = on
        return True

    def grown_size(self) -> int:
        return max(self.size + 1, round(self.size * SIZE_STEP))

    def shrunk_size(self) -> int:
        return min(self.size - 1, round(self.size / SIZE_STEP))

    def radius(self, pressure: float) -> float:
        p = 1.0 if pressure <= 0 else min(1.0, pressure)
        return max(0.5, self.size / 2.0 * max(0.05, p))

    # ------------------------------------------------------------------ strokes
    def begin(self, x: float, y: float, pressure: float, erase: bool) -> BBox | None:
        """Start a stroke with a dab at (x, y); it erases when ``erase`` or the eraser is on.
        Returns the changed box."""
        self._erase = erase or self.eraser
        self.model.begin_stroke()
        self._last = (x, y, pressure)
        return self._segment(x, y, pressure, x, y, pressure)

    def move(self, x: float, y: float, pressure: float) -> BBox | None:
        """Continue the stroke to (x, y); returns the changed box (None if nothing was
        painted, or no stroke is in progress)."""
        last = self._last
        if last is None or not self.model.in_stroke:
            return None
        lx, ly, lp = last
        if _same(x, lx) and _same(y, ly) and pressure == lp:
            return None
        self._last = (x, y, pressure)
        return self._segment(lx, ly, lp, x, y, pressure)

    def end(self) -> bool:
        """Close the stroke as one undo step; returns whether the mask changed."""
        self._last = None
        return self.model.end_stroke()

    def _segment(self, x0: float, y0: float, p0: float, x1: float, y1: float, p1: float
                 ) -> BBox | None:
        return self.model.stroke_segment(x0, y0, x1, y1, self.radius(p0), self.radius(p1),
                                         self.hardness, self._erase)


class MaskOverlay:
    """The translucent colour shown over the image: one premultiplied ARGB32 pixel per mask
    pixel (``pixels``, (h, w) uint32), recoloured only where the mask changed, and blurred by
    ``blur`` pixels (PIL's GaussianBlur radius, as the engine blurs the mask) when set."""

    def __init__(self, rgb: tuple[int, int, int] = MASK_RGB,
                 opacity: float = MASK_OPACITY) -> None:
        self.pixels: np.ndarray | None = None
        self.blur = 0
        r, g, b = rgb
        a = round(255 * opacity)
        # lookup table: mask value -> overlay pixel (premultiplied ARGB32)
        vals = np.arange(256, dtype=np.uint32) * a // 255
        self.lut = ((vals << 24) | ((vals * r // 255) << 16) | ((vals * g // 255) << 8)
                    | (vals * b // 255)).astype(np.uint32)

    def reset(self, width: int, height: int) -> None:
        """A fully transparent overlay of the given size (no overlay when it is empty)."""
        self.pixels = (np.zeros((height, width), dtype=np.uint32) if width and height
                       else None)

    def padded(self, box: BBox, w: int, h: int) -> BBox:
        """The overlay box affected by a change in ``box`` (wider when blur is shown)."""
        if self.blur <= 0:
            return box
        return expand(box, 3 * self.blur + 2, w, h)

    def refresh(self, mask: np.ndarray, box: BBox) -> None:
        """Recolour the overlay where a change of ``mask`` in ``box`` shows."""
        if self.pixels is None:
            return
        h, w = mask.shape
        if self.blur <= 0:
            x0, y0, x1, y1 = box
            self.pixels[y0:y1, x0:x1] = self.lut[mask[y0:y1, x0:x1]]
            return
        pad = 3 * self.blur + 2
        out = expand(box, pad, w, h)
        src = expand(out, pad, w, h)
        crop = Image.fromarray(mask[src[1]:src[3], src[0]:src[2]], "L")
        blurred = np.asarray(crop.filter(ImageFilter.GaussianBlur(self.blur)))
        ox, oy = out[0] - src[0], out[1] - src[1]
        part = blurred[oy:oy + out[3] - out[1], ox:ox + out[2] - out[0]]
        self.pixels[out[1]:out[3], out[0]:out[2]] = self.lut[part]


# ------------------------------------------------------------------------------ mask files
def mask_from_image(pil: Image.Image, width: int, height: int) -> np.ndarray:
    """A loaded mask image as a (height, width) uint8 array (white = repaint).

    Grayscale or RGB masks are read by luminance; a mask whose colour is uniform and whose
    alpha varies is read from its alpha. A mask of another size is scaled when its aspect
    ratio matches (within 1 %), otherwise refused with :class:`ImageInputError`.
    """
    if pil.mode == "RGBA":
        rgba = np.asarray(pil)
        alpha = rgba[..., 3]
        if alpha.min() != alpha.max() and all(
                rgba[..., c].min() == rgba[..., c].max() for c in range(3)):
            pil = Image.fromarray(alpha, "L")
        else:
            pil = pil.convert("L")
    elif pil.mode != "L":
        pil = pil.convert("L")
    w, h = width, height
    if pil.size != (w, h):
        aspect_ok = abs(pil.width / pil.height - w / h) <= 0.01 * (w / h)
        if not aspect_ok:
            raise ImageInputError(
                f"The mask is {pil.width}×{pil.height} but the image is {w}×{h}; "
                "their shapes differ.")
        pil = pil.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def write_mask_png(mask: np.ndarray, target: Path) -> None:
    """Write ``mask`` as an 8-bit grayscale PNG at ``target``, atomically (temporary file in
    the same folder, fsync, rename). Raises OSError, leaving no temporary file behind."""
    tmp_name = ""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".mask-", suffix=".png.tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(mask, "L").save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except OSError:
        if tmp_name:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        raise
