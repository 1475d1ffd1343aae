"""ImageViewer: shows one image with zoom (wheel, around the cursor) and pan (middle button,
space+drag, or left-drag where the subclass does not paint).

Subclasses draw on top through two hooks: :meth:`ImageViewer.paint_image_overlay` (painter in
image coordinates) and :meth:`ImageViewer.paint_foreground` (painter in widget coordinates), and
may widen the area that "fit" shows with :meth:`ImageViewer.content_rect`.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QContextMenuEvent,
    QFocusEvent,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

MIN_ZOOM = 1 / 64
MAX_ZOOM = 64.0
WHEEL_STEP = 1.2  # zoom factor per wheel notch (120 units)
FIT_MARGIN = 12  # pixels left around the image when fitting


def checkerboard_brush(cell: int = 8, light: QColor | None = None,
                       dark: QColor | None = None) -> QBrush:
    """A brush tiling a grey checkerboard, drawn behind transparent pixels."""
    light = light or QColor(204, 204, 204)
    dark = dark or QColor(153, 153, 153)
    tile = QPixmap(cell * 2, cell * 2)
    tile.fill(light)
    p = QPainter(tile)
    p.fillRect(0, 0, cell, cell, dark)
    p.fillRect(cell, cell, cell, cell, dark)
    p.end()
    return QBrush(tile)


class ImageViewer(QWidget):
    """Shows an image scaled by :meth:`zoom` and shifted by a pan offset.

    Coordinates: a widget point ``w`` shows the image point ``(w - offset) / zoom``.
    """

    zoomChanged = Signal(float)
    #: Emitted when zoom or pan changes (for overlays, rulers, status labels).
    viewChanged = Signal()

    #: Whether a plain left-drag pans (True for a pure viewer; painting subclasses set False).
    left_button_pans: bool = True

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._pixmap: QPixmap | None = None
        self._logical: QSize | None = None  # a live preview's own size (see set_preview)
        self._zoom = 1.0
        self._smooth = False  # always scale smoothly (live previews), else only below 2x
        self._offset = QPointF(0.0, 0.0)
        self._auto_fit = True  # refit on resize until the person zooms or pans
        self._placeholder = "No image"
        self._space_down = False
        self._pan_anchor: QPointF | None = None
        self._pan_button = Qt.MouseButton.NoButton
        self._checker = checkerboard_brush()
        self._drop_highlight = False
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setAccessibleName("Image view")
        self.setToolTip("")

    # ---------------------------------------------------------------- image
    def set_image(self, image: QImage | None, smooth: bool = False) -> None:
        """Show ``image`` (copied by Qt's implicit sharing). Fits to the view when it is the
        first image or its size differs from the previous one; keeps zoom and pan otherwise.

        Zoomed in 2x or more, pixels are shown sharp (to inspect them); ``smooth`` scales
        smoothly at any zoom, for small images shown large such as the live preview."""
        self._smooth = smooth
        if image is not None and image.isNull():
            image = None
        self._show(image, QPixmap.fromImage(image) if image is not None else None, None)

    def set_preview(self, image: QImage, size: QSize) -> None:
        """Show a live preview of ``size`` that is already rendered (scaled once, smoothly,
        by the worker) at the size this view shows it at: see :meth:`preview_box`. Painted
        with a plain copy when it matches the image's place on screen, else scaled."""
        self._smooth = True
        self._show(None if image.isNull() else image, None, QSize(size))

    def showing_preview(self) -> bool:
        return self._logical is not None

    def preview_box(self) -> QSize:
        """Device pixels a fitted image takes at most in this view (what a live preview is
        rendered to fit); empty while the person has zoomed or panned (previews then come
        at their own size and are scaled here)."""
        if not self._auto_fit:
            return QSize()
        ratio = self.devicePixelRatioF()
        return QSize(max(1, round((self.width() - 2 * FIT_MARGIN) * ratio)),
                     max(1, round((self.height() - 2 * FIT_MARGIN) * ratio)))

    def _show(self, image: QImage | None, pixmap: QPixmap | None, logical: QSize | None
              ) -> None:
        old_size = self.image_size() if self._image is not None else None
        if (image is not None and logical is not None and self._logical is not None
                and logical == self._logical and self._image is not None
                and image.size() == self._image.size()):
            # the next live preview of a run: same place, same size, nothing else changes;
            # only the image's rectangle is painted again (a few times a second while the
            # worker waits for the GUI thread)
            self._image = image
            self.update(self.image_rect_in_widget().toAlignedRect().adjusted(-1, -1, 1, 1))
            return
        self._image, self._pixmap, self._logical = image, pixmap, logical
        if image is None:
            self._logical = None
            self._auto_fit = True
        elif old_size is None or old_size != self.image_size() or self._auto_fit:
            self.fit()
        self.update_cursor()
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def has_image(self) -> bool:
        return self._image is not None

    def image_size(self) -> QSize:
        if self._image is None:
            return QSize()
        return QSize(self._logical) if self._logical is not None else self._image.size()

    def set_placeholder(self, text: str) -> None:
        """The text shown (centred) while there is no image."""
        self._placeholder = text
        if self._image is None:
            self.update()

    def placeholder(self) -> str:
        return self._placeholder

    def set_drop_highlight(self, on: bool) -> None:
        """Highlight the view while something droppable hovers over it."""
        if on != self._drop_highlight:
            self._drop_highlight = on
            self.update()

    # ---------------------------------------------------------------- geometry
    def zoom(self) -> float:
        return self._zoom

    def offset(self) -> QPointF:
        """Widget position of the image's top-left corner."""
        return QPointF(self._offset)

    def set_zoom(self, z: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``z`` keeping the image point under ``anchor`` (widget coordinates; default:
        the view's centre) in place."""
        z = max(MIN_ZOOM, min(MAX_ZOOM, float(z)))
        if anchor is None:
            anchor = QPointF(self.width() / 2.0, self.height() / 2.0)
        image_point = self.map_to_image(anchor)
        changed = not math.isclose(z, self._zoom, rel_tol=1e-9)
        self._zoom = z
        self._offset = anchor - image_point * z
        self._auto_fit = False
        self.update()
        self.viewChanged.emit()
        if changed:
            self.zoomChanged.emit(z)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        self.set_zoom(self._zoom * factor, anchor)

    def pan_by(self, dx: float, dy: float) -> None:
        self._offset += QPointF(dx, dy)
        self._auto_fit = False
        self.update()
        self.viewChanged.emit()

    def content_rect(self) -> QRectF:
        """The area, in image coordinates, that :meth:`fit` brings into view."""
        if self._image is None:
            return QRectF()
        size = self.image_size()
        return QRectF(0, 0, size.width(), size.height())

    def fit(self) -> None:
        """Scale and centre the content so that all of it is visible."""
        rect = self.content_rect()
        if rect.isEmpty():
            self._auto_fit = True
            return
        avail_w = max(1.0, self.width() - 2 * FIT_MARGIN)
        avail_h = max(1.0, self.height() - 2 * FIT_MARGIN)
        z = max(MIN_ZOOM, min(MAX_ZOOM, avail_w / rect.width(), avail_h / rect.height()))
        changed = not math.isclose(z, self._zoom, rel_tol=1e-9)
        self._zoom = z
        centre = rect.center() * z
        self._offset = QPointF(self.width() / 2.0, self.height() / 2.0) - centre
        self._auto_fit = True
        self.update()
        self.viewChanged.emit()
        if changed:
            self.zoomChanged.emit(z)

    def actual_size(self) -> None:
        """Zoom to 100 % around the view's centre."""
        self.set_zoom(1.0)

    def is_auto_fit(self) -> bool:
        return self._auto_fit

    def map_to_image(self, p: QPointF) -> QPointF:
        """Widget point -> image point (floating point, pixel (x, y) spans [x, x+1))."""
        return (QPointF(p) - self._offset) / self._zoom

    def map_from_image(self, p: QPointF) -> QPointF:
        return QPointF(p) * self._zoom + self._offset

    def image_rect_in_widget(self) -> QRectF:
        if self._image is None:
            return QRectF()
        size = self.image_size()
        return QRectF(self._offset,
                      QPointF(self._offset.x() + size.width() * self._zoom,
                              self._offset.y() + size.height() * self._zoom))

    def widget_rect_of(self, r: QRectF) -> QRect:
        """The widget rectangle (rounded outward, +2 px) that shows image rectangle ``r``."""
        tl = self.map_from_image(r.topLeft())
        br = self.map_from_image(r.bottomRight())
        return QRectF(tl, br).normalized().toAlignedRect().adjusted(-2, -2, 2, 2)

    # ---------------------------------------------------------------- painting
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Base).darker(108 if pal.color(
            QPalette.ColorRole.Base).lightness() > 128 else 80)
        p.fillRect(event.rect(), bg)
        if self._image is None or (self._pixmap is None and self._logical is None):
            self._paint_placeholder(p)
            self._paint_drop_highlight(p)
            p.end()
            return
        target = self.image_rect_in_widget()
        if self._logical is not None or self._pixmap is None:  # a live preview: no overlays
            self._paint_preview(p, self._image, target)
            self._paint_drop_highlight(p)
            p.end()
            return
        if self._image.hasAlphaChannel():
            p.save()
            p.setBrushOrigin(target.topLeft())
            p.fillRect(target, self._checker)
            p.restore()
        p.save()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                        self._smooth or self._zoom < 2.0)
        p.translate(self._offset)
        p.scale(self._zoom, self._zoom)
        p.drawPixmap(0, 0, self._pixmap)
        self.paint_image_overlay(p)
        p.restore()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self.paint_foreground(p)
        self._paint_drop_highlight(p)
        p.end()

    @staticmethod
    def _paint_preview(p: QPainter, image: QImage, target: QRectF) -> None:
        ratio = image.devicePixelRatio() or 1.0
        w, h = image.width() / ratio, image.height() / ratio
        if abs(w - target.width()) <= 2 and abs(h - target.height()) <= 2:
            # rendered for this place: a plain copy, centred (no scaling, no filtering)
            p.drawImage(QPointF(round(target.center().x() - w / 2),
                                round(target.center().y() - h / 2)), image)
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(target, image)

    def _paint_drop_highlight(self, p: QPainter) -> None:
        if not self._drop_highlight:
            return
        hl = self.palette().color(QPalette.ColorRole.Highlight)
        fill = QColor(hl)
        fill.setAlpha(40)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setPen(QPen(hl, 3))
        p.setBrush(fill)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(3, 3, -3, -3), 8, 8)

    def _paint_placeholder(self, p: QPainter) -> None:
        pal = self.palette()
        r = QRectF(self.rect()).adjusted(16, 16, -16, -16)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        edge = QColor(pal.color(QPalette.ColorRole.WindowText))
        edge.setAlphaF(0.3)
        pen = QPen(edge, 1.5, Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(r, 10, 10)
        text = QColor(pal.color(QPalette.ColorRole.WindowText))
        text.setAlphaF(0.6)
        p.setPen(text)
        font = p.font()
        font.setPointSizeF(font.pointSizeF() * 1.1)
        p.setFont(font)
        p.drawText(r.adjusted(24, 24, -24, -24),
                   int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap),
                   self._placeholder)

    def paint_image_overlay(self, painter: QPainter) -> None:
        """Hook: draw over the image; ``painter`` is in image coordinates."""

    def paint_foreground(self, painter: QPainter) -> None:
        """Hook: draw on top of everything; ``painter`` is in widget coordinates."""

    # ---------------------------------------------------------------- events
    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._auto_fit and self._image is not None:
            self.fit()
        elif event.oldSize().isValid() and self._image is not None:
            # keep the point at the centre in the centre
            d = QPointF((event.size().width() - event.oldSize().width()) / 2.0,
                        (event.size().height() - event.oldSize().height()) / 2.0)
            self._offset += d
            self.viewChanged.emit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._image is None:
            event.ignore()
            return
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta == 0:
            pd = event.pixelDelta()
            delta = pd.y() * 4 if not pd.isNull() else 0
        if delta == 0:
            event.ignore()
            return
        self.zoom_by(WHEEL_STEP ** (delta / 120.0), event.position())
        event.accept()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.left_button_pans:
            self.fit()
            event.accept()
            return
        if event.button() == Qt.MouseButton.MiddleButton:
            self.fit()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def is_panning(self) -> bool:
        return self._pan_anchor is not None

    def space_held(self) -> bool:
        return self._space_down

    def wants_pan(self, event: QMouseEvent) -> bool:
        """Whether a press of ``event.button()`` starts panning."""
        b = event.button()
        if b == Qt.MouseButton.MiddleButton:
            return True
        if b == Qt.MouseButton.LeftButton:
            return self._space_down or self.left_button_pans
        return False

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if self._image is not None and self.wants_pan(event):
            self._pan_anchor = event.position()
            self._pan_button = event.button()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_anchor is not None:
            d = event.position() - self._pan_anchor
            self._pan_anchor = event.position()
            self.pan_by(d.x(), d.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_anchor is not None and event.button() == self._pan_button:
            self._pan_anchor = None
            self._pan_button = Qt.MouseButton.NoButton
            self.update_cursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and self._image is not None:
            if not event.isAutoRepeat():
                self._space_down = True
                self.update_cursor()
            event.accept()
            return
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if self._image is not None and mods in (Qt.KeyboardModifier.NoModifier,
                                                Qt.KeyboardModifier.ControlModifier):
            if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
                self.zoom_by(WHEEL_STEP)
                return
            if key == Qt.Key.Key_Minus:
                self.zoom_by(1 / WHEEL_STEP)
                return
            if key == Qt.Key.Key_0:
                self.fit()
                return
            if key == Qt.Key.Key_1:
                self.actual_size()
                return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self.update_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        self._space_down = False
        self.update_cursor()
        super().focusOutEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        super().leaveEvent(event)
        self.update()

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        event.ignore()

    def update_cursor(self) -> None:
        """Pick the mouse cursor for the current state (subclasses extend)."""
        if self._pan_anchor is not None:
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._image is not None and (self._space_down or self.left_button_pans):
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.unsetCursor()

    def sizeHint(self) -> QSize:
        return QSize(512, 512)
