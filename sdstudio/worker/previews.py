"""The live preview's hand-over from the worker thread to the GUI: one slot, not a queue.

The worker offers every preview the engine makes to :class:`PreviewSlot`. One that comes
less than the slot's ``interval`` after the GUI took the last one is skipped before it is
rendered (the GUI would not show it yet; the first one after the interval is); the others are
converted and scaled (smoothly, once) to the size the window shows them at, and the GUI takes
the latest when it gets to it. A preview the GUI has not taken yet is replaced by the newer
one (counted as dropped), so a slow GUI never builds a backlog, and the GUI thread's work per
preview is one blit whatever the window's size: every Python line it runs delays the worker
(one interpreter lock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage


@dataclass(frozen=True)
class ShownPreview:
    """A preview as the GUI gets it: ``image`` is the preview of ``size`` (the engine's
    preview size: the latent's, or the image's for TAESD) scaled to fit the view's box."""

    job_id: int
    step: int
    image: QImage
    size: QSize


def to_qimage(image: Any) -> QImage:
    """PIL (RGB/RGBA/L) -> QImage sharing nothing with ``image``."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    fmt = QImage.Format.Format_RGBA8888 if image.mode == "RGBA" else QImage.Format.Format_RGB888
    channels = 4 if image.mode == "RGBA" else 3
    data = image.tobytes()
    return QImage(data, image.width, image.height, image.width * channels, fmt).copy()


def fit_size(size: QSize, box: QSize) -> QSize:
    """``size`` scaled (up or down, aspect kept) to fit in ``box``; ``size`` when the box is
    empty."""
    if box.width() <= 0 or box.height() <= 0 or size.isEmpty():
        return QSize(size)
    zoom = min(box.width() / size.width(), box.height() / size.height())
    return QSize(max(1, round(size.width() * zoom)), max(1, round(size.height() * zoom)))


def render_preview(image: Any, box: QSize, ratio: float = 1.0) -> QImage:
    """The PIL preview as the view shows it: scaled smoothly to fit ``box`` (device pixels;
    an empty box keeps its size), in the screen's 32-bit format (drawn with a plain copy)."""
    qimage = to_qimage(image)
    target = fit_size(qimage.size(), box)
    if target != qimage.size():
        qimage = qimage.scaled(target, Qt.AspectRatioMode.IgnoreAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
    fmt = (QImage.Format.Format_ARGB32_Premultiplied if qimage.hasAlphaChannel()
           else QImage.Format.Format_RGB32)
    qimage = qimage.convertToFormat(fmt)
    qimage.setDevicePixelRatio(ratio)
    return qimage


class PreviewSlot:
    """The latest preview waiting for the GUI. ``put`` (worker thread) returns True when the
    slot was empty, i.e. when the GUI must be told; ``take`` (GUI thread) empties it.
    ``interval``: seconds after a take during which previews are skipped unrendered."""

    def __init__(self, interval: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._item: ShownPreview | None = None
        self._box = QSize()
        self._ratio = 1.0
        self.interval = interval
        self._taken_at = float("-inf")
        self.made = 0  # previews rendered and put
        self.dropped = 0  # replaced before the GUI took them
        self.skipped = 0  # offered too soon after a take: never rendered

    def set_box(self, box: QSize, ratio: float = 1.0) -> None:
        """Where the GUI shows previews: the box (device pixels) to fit them in, and the
        screen's device pixel ratio. An empty box: previews keep the engine's size."""
        with self._lock:
            self._box, self._ratio = QSize(box), float(ratio) or 1.0

    def put(self, job_id: int, step: int, image: Any) -> bool:
        with self._lock:
            if self._item is None and time.monotonic() < self._taken_at + self.interval:
                self.skipped += 1
                return False
            box, ratio = QSize(self._box), self._ratio
        rendered = render_preview(image, box, ratio)  # outside the lock: the GUI never waits
        shown = ShownPreview(job_id, step, rendered, QSize(image.width, image.height))
        with self._lock:
            was_empty = self._item is None
            if not was_empty:
                self.dropped += 1
            self._item = shown
            self.made += 1
        return was_empty

    def take(self) -> ShownPreview | None:
        with self._lock:
            item, self._item = self._item, None
            if item is not None:
                self._taken_at = time.monotonic()
        return item

    def clear(self, job_id: int | None = None) -> None:
        """Drop the waiting preview (only ``job_id``'s when given)."""
        with self._lock:
            if self._item is not None and job_id in (None, self._item.job_id):
                self._item = None
