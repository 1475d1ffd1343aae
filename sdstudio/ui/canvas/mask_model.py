"""The inpaint mask as data: a uint8 array the size of the image, brush strokes and undo history.

No widgets here (numpy only), so the painting rules are testable on their own and the widget
stays a thin view. Values: 0 = keep, 255 = repaint, in between = soft edge.

Strokes
    A stroke is a polyline of mouse or tablet positions in *image* coordinates. Each segment is
    painted as a capsule (the area swept by a disc moving from one point to the next, its radius
    interpolated for pen pressure), so fast mouse moves leave no gaps. Within a stroke,
    painting takes the maximum and erasing the minimum of old and new values, so overlapping
    segments never build up darker joints and a stroke never undoes itself.

Undo
    Each step stores only the bounding box that changed, zlib-compressed, and undo/redo swap
    that region with the current one (one copy per step, not two). Masks compress extremely well
    (a typical stroke costs a few kilobytes), so :data:`MAX_UNDO` = 100 steps of a 2048×2048
    mask usually take well under a megabyte. The worst case is an incompressible full-image step
    (loading a noisy mask): 4 MiB per step at 2048², i.e. 200 MiB for 50 such steps, which is
    why steps beyond the newest :data:`MIN_UNDO` are dropped once the history passes
    :data:`HISTORY_BUDGET` bytes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

MAX_UNDO = 100
MIN_UNDO = 50
HISTORY_BUDGET = 256 * 1024 * 1024

BBox = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive)


@dataclass(frozen=True)
class _Step:
    bbox: BBox
    data: bytes  # zlib-compressed region, the state *not* currently in the mask

    @property
    def nbytes(self) -> int:
        return len(self.data)


def _union(a: BBox | None, b: BBox | None) -> BBox | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def brush_alpha(dist: np.ndarray, radius: np.ndarray | float, hardness: float) -> np.ndarray:
    """Coverage in [0, 1] of pixels whose centres lie ``dist`` from the brush centre.

    A hard brush (hardness 1) is a disc of ``radius`` with a one-pixel anti-aliased edge (a
    pixel centre exactly on the circle gets one half). Lower hardness widens the soft edge
    inwards, to the whole radius at hardness 0, with a smoothstep falloff.
    """
    hardness = min(1.0, max(0.0, float(hardness)))
    r = np.asarray(radius, dtype=np.float32)
    soft = np.maximum(1.0, r * (1.0 - hardness)).astype(np.float32)
    a = np.clip((r + 0.5 - dist) / soft, 0.0, 1.0)
    if hardness < 1.0:
        a = a * a * (3.0 - 2.0 * a)
    return a


class MaskModel:
    """A grayscale mask with capsule brush strokes and bounded, compressed undo history."""

    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.arr = np.zeros((max(0, height), max(0, width)), dtype=np.uint8)
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []
        self._stroke_before: np.ndarray | None = None
        self._stroke_bbox: BBox | None = None
        self.max_undo = MAX_UNDO
        self.min_undo = MIN_UNDO
        self.budget = HISTORY_BUDGET

    # ------------------------------------------------------------------ basics
    @property
    def width(self) -> int:
        return int(self.arr.shape[1])

    @property
    def height(self) -> int:
        return int(self.arr.shape[0])

    @property
    def full_bbox(self) -> BBox:
        return (0, 0, self.width, self.height)

    def reset(self, width: int, height: int) -> None:
        """An empty mask of the given size with no history."""
        self.arr = np.zeros((height, width), dtype=np.uint8)
        self._undo.clear()
        self._redo.clear()
        self._stroke_before = None
        self._stroke_bbox = None

    def is_empty(self) -> bool:
        return not bool(self.arr.any())

    def coverage(self) -> float:
        """Fraction of the image marked for repainting (values weighted, 0..1)."""
        if self.arr.size == 0:
            return 0.0
        return float(self.arr.mean()) / 255.0

    def masked_bbox(self) -> BBox | None:
        """Bounding box of the non-zero pixels, or None when the mask is empty."""
        ys = np.flatnonzero(self.arr.any(axis=1))
        if ys.size == 0:
            return None
        xs = np.flatnonzero(self.arr.any(axis=0))
        return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)

    # ------------------------------------------------------------------ strokes
    @property
    def in_stroke(self) -> bool:
        return self._stroke_before is not None

    def begin_stroke(self) -> None:
        if self._stroke_before is not None:
            self.end_stroke()
        self._stroke_before = self.arr.copy()
        self._stroke_bbox = None

    def stroke_segment(self, x0: float, y0: float, x1: float, y1: float, r0: float,
                       r1: float, hardness: float, erase: bool) -> BBox | None:
        """Paint (or erase) the capsule from (x0, y0) radius r0 to (x1, y1) radius r1.

        Coordinates are image pixels (pixel (i, j) covers [i, i+1) × [j, j+1)). Returns the
        changed bounding box (clipped to the mask), or None if it lies outside.
        Long segments are cut into pieces so each piece only touches a small box.
        """
        if self.arr.size == 0:
            return None
        implicit = self._stroke_before is None
        if implicit:
            self.begin_stroke()
        length = math.hypot(x1 - x0, y1 - y0)
        rmax = max(r0, r1, 0.5)
        piece = max(32.0, 4.0 * rmax)
        n = max(1, math.ceil(length / piece))
        changed: BBox | None = None
        for i in range(n):
            t0, t1 = i / n, (i + 1) / n
            b = self._capsule(x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0,
                              x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1,
                              r0 + (r1 - r0) * t0, r0 + (r1 - r0) * t1, hardness, erase)
            changed = _union(changed, b)
        self._stroke_bbox = _union(self._stroke_bbox, changed)
        if implicit:
            self.end_stroke()
        return changed

    def _capsule(self, x0: float, y0: float, x1: float, y1: float, r0: float, r1: float,
                 hardness: float, erase: bool) -> BBox | None:
        h, w = self.arr.shape
        r0, r1 = max(r0, 0.5), max(r1, 0.5)
        pad = max(r0, r1) + 1.0
        bx0 = max(0, math.floor(min(x0, x1) - pad))
        by0 = max(0, math.floor(min(y0, y1) - pad))
        bx1 = min(w, math.ceil(max(x0, x1) + pad) + 1)
        by1 = min(h, math.ceil(max(y0, y1) + pad) + 1)
        if bx0 >= bx1 or by0 >= by1:
            return None
        px = np.arange(bx0, bx1, dtype=np.float32)[None, :] + np.float32(0.5)
        py = np.arange(by0, by1, dtype=np.float32)[:, None] + np.float32(0.5)
        dx, dy = np.float32(x1 - x0), np.float32(y1 - y0)
        len2 = float(dx * dx + dy * dy)
        if len2 < 1e-12:
            t = np.zeros((1, 1), dtype=np.float32)
        else:
            t = np.clip(((px - np.float32(x0)) * dx + (py - np.float32(y0)) * dy)
                        / np.float32(len2), 0.0, 1.0)
        ex = px - (np.float32(x0) + t * dx)
        ey = py - (np.float32(y0) + t * dy)
        dist = np.sqrt(ex * ex + ey * ey)
        radius: np.ndarray | float = (np.float32(r0) + t * np.float32(r1 - r0)
                                      if r0 != r1 else float(r0))
        a = brush_alpha(dist, radius, hardness)
        value = np.rint(a * 255.0).astype(np.uint8)
        region = self.arr[by0:by1, bx0:bx1]
        if erase:
            np.minimum(region, 255 - value, out=region)
        else:
            np.maximum(region, value, out=region)
        return (bx0, by0, bx1, by1)

    def end_stroke(self) -> bool:
        """Close the stroke as one undo step. Returns whether anything changed."""
        before, bbox = self._stroke_before, self._stroke_bbox
        self._stroke_before = None
        self._stroke_bbox = None
        if before is None or bbox is None:
            return False
        x0, y0, x1, y1 = bbox
        old = before[y0:y1, x0:x1]
        if np.array_equal(old, self.arr[y0:y1, x0:x1]):
            return False
        self._push(_Step(bbox, zlib.compress(np.ascontiguousarray(old).tobytes(), 1)))
        return True

    def cancel_stroke(self) -> BBox | None:
        """Undo the stroke in progress without recording it; returns the box to repaint."""
        before, bbox = self._stroke_before, self._stroke_bbox
        self._stroke_before = None
        self._stroke_bbox = None
        if before is not None and bbox is not None:
            x0, y0, x1, y1 = bbox
            self.arr[y0:y1, x0:x1] = before[y0:y1, x0:x1]
        return bbox

    # ------------------------------------------------------------------ whole-mask steps
    def replace(self, new: np.ndarray) -> bool:
        """Replace the whole mask as one undo step (clear, fill, invert, load). Returns whether
        anything changed."""
        if new.shape != self.arr.shape:
            raise ValueError(f"mask shape {new.shape} differs from {self.arr.shape}")
        if self._stroke_before is not None:
            self.end_stroke()
        if np.array_equal(new, self.arr):
            return False
        self._push(_Step(self.full_bbox, zlib.compress(self.arr.tobytes(), 1)))
        self.arr = np.ascontiguousarray(new, dtype=np.uint8).copy()
        return True

    def clear(self) -> bool:
        return self.replace(np.zeros_like(self.arr))

    def fill(self) -> bool:
        return self.replace(np.full_like(self.arr, 255))

    def invert(self) -> bool:
        return self.replace(255 - self.arr)

    # ------------------------------------------------------------------ history
    def _push(self, step: _Step) -> None:
        self._undo.append(step)
        self._redo.clear()
        while len(self._undo) > self.max_undo:
            self._undo.pop(0)
        while len(self._undo) > self.min_undo and self.history_bytes() > self.budget:
            self._undo.pop(0)

    def _swap(self, step: _Step) -> _Step:
        x0, y0, x1, y1 = step.bbox
        region = np.frombuffer(zlib.decompress(step.data), dtype=np.uint8).reshape(
            y1 - y0, x1 - x0)
        current = zlib.compress(np.ascontiguousarray(self.arr[y0:y1, x0:x1]).tobytes(), 1)
        self.arr[y0:y1, x0:x1] = region
        return _Step(step.bbox, current)

    def can_undo(self) -> bool:
        return bool(self._undo) or self._stroke_before is not None

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> BBox | None:
        """Undo the last step; returns the changed box, or None when there is nothing to undo."""
        if self._stroke_before is not None:
            self.end_stroke()
        if not self._undo:
            return None
        step = self._undo.pop()
        self._redo.append(self._swap(step))
        return step.bbox

    def redo(self) -> BBox | None:
        if not self._redo:
            return None
        step = self._redo.pop()
        self._undo.append(self._swap(step))
        return step.bbox

    def undo_count(self) -> int:
        return len(self._undo)

    def redo_count(self) -> int:
        return len(self._redo)

    def history_bytes(self) -> int:
        return sum(s.nbytes for s in self._undo) + sum(s.nbytes for s in self._redo)
