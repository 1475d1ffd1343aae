"""The viewer part of the mask canvas: draws the mask overlay and the brush cursor over the
image, and turns mouse and tablet input into strokes on its :class:`MaskCanvas`.

Left paints (erases with the eraser on), right always erases, a tablet's eraser end erases;
the middle button or space+drag pans (:class:`ImageViewer` does that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QMouseEvent,
    QPainter,
    QPen,
    QPointingDevice,
    QTabletEvent,
)

from sdstudio.ui.canvas.viewer import ImageViewer

if TYPE_CHECKING:
    from sdstudio.ui.canvas.mask_canvas import MaskCanvas


class MaskView(ImageViewer):
    """The viewer part of the mask canvas: draws the overlay and the brush cursor and turns
    mouse and tablet input into strokes on its canvas."""

    left_button_pans = False

    def __init__(self, canvas: MaskCanvas) -> None:
        super().__init__(canvas)
        self._canvas = canvas
        self._hover: QPointF | None = None
        self._stroking = False
        self._stroke_button = Qt.MouseButton.NoButton
        self._tablet_down = False
        self.setAttribute(Qt.WidgetAttribute.WA_TabletTracking, True)

    # ---------------------------------------------------------------- drawing
    def paint_image_overlay(self, painter: QPainter) -> None:
        overlay = self._canvas.overlay_image()
        if overlay is not None:
            painter.drawImage(0, 0, overlay)

    def paint_foreground(self, painter: QPainter) -> None:
        area = self._canvas.masked_area_rect()
        if area is not None:
            r = QRectF(self.map_from_image(area.topLeft()), self.map_from_image(area.bottomRight()))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0, 150), 3))
            painter.drawRect(r)
            painter.setPen(QPen(QColor(255, 255, 255, 230), 1.2, Qt.PenStyle.DashLine))
            painter.drawRect(r)
        if self._hover is None or not self.has_image() or self.is_panning() or self.space_held():
            return
        radius = self._canvas.brush_size() / 2.0 * self.zoom()
        c = self._hover
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3.0))
        painter.drawEllipse(c, radius, radius)
        erasing = self._canvas.eraser() or self._stroke_button == Qt.MouseButton.RightButton
        painter.setPen(QPen(QColor(255, 255, 255) if not erasing else QColor(120, 200, 255),
                            1.4, Qt.PenStyle.SolidLine if not erasing else Qt.PenStyle.DashLine))
        painter.drawEllipse(c, radius, radius)
        # centre mark so the hot spot is visible at any brush size
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3.0))
        painter.drawPoint(c)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5))
        painter.drawPoint(c)

    def cursor_rect(self, pos: QPointF | None) -> QRectF:
        if pos is None:
            return QRectF()
        r = self._canvas.brush_size() / 2.0 * self.zoom() + 4
        return QRectF(pos.x() - r, pos.y() - r, 2 * r, 2 * r)

    def _move_hover(self, pos: QPointF | None) -> None:
        old = self.cursor_rect(self._hover)
        self._hover = QPointF(pos) if pos is not None else None
        self.update(old.toAlignedRect())
        self.update(self.cursor_rect(self._hover).toAlignedRect())

    def forget_stroke(self) -> None:
        """Drop the pointer state of a stroke the canvas has ended by itself (undo, clear...
        during a stroke): the rest of that drag paints nothing."""
        self._stroking = False
        self._tablet_down = False
        self._stroke_button = Qt.MouseButton.NoButton

    def update_cursor(self) -> None:
        if self.is_panning():
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif not self.has_image():
            self.unsetCursor()
        elif self.space_held():
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.setCursor(Qt.CursorShape.BlankCursor)  # the brush outline is the cursor
        self.update()

    # ---------------------------------------------------------------- mouse
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        b = event.button()
        if self._stroking or self._tablet_down:
            event.accept()
            return
        if self.has_image() and b in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton) \
                and not self.space_held():
            self._stroking = True
            self._stroke_button = b
            self._canvas.begin_stroke(self.map_to_image(event.position()),
                                       erase=b == Qt.MouseButton.RightButton, pressure=1.0)
            self._move_hover(event.position())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._stroking:
            self._canvas.continue_stroke(self.map_to_image(event.position()), pressure=1.0)
        self._move_hover(event.position())
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._stroking and event.button() == self._stroke_button:
            self._canvas.continue_stroke(self.map_to_image(event.position()), pressure=1.0)
            self._stroking = False
            self._stroke_button = Qt.MouseButton.NoButton
            self._canvas.end_stroke()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        # a double-click with a painting button is just another dab, never "fit"
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self.mousePressEvent(event)
            return
        super().mouseDoubleClickEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._move_hover(None)
        super().leaveEvent(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        if self._stroking:
            self._stroking = False
            self._stroke_button = Qt.MouseButton.NoButton
            self._canvas.end_stroke()
        super().focusOutEvent(event)

    # ---------------------------------------------------------------- tablet
    def tabletEvent(self, event: QTabletEvent) -> None:
        et = event.type()
        pressure = float(event.pressure()) if event.pressure() > 0 else 0.0
        pos = event.position()
        erase = event.pointerType() == QPointingDevice.PointerType.Eraser
        if et == QEvent.Type.TabletPress:
            if not self.has_image() or self.space_held() or self._stroking:
                event.ignore()  # let Qt synthesise a mouse press (pan etc.)
                return
            self.setFocus(Qt.FocusReason.MouseFocusReason)
            self._tablet_down = True
            erase = erase or event.button() == Qt.MouseButton.RightButton
            self._canvas.begin_stroke(self.map_to_image(pos), erase=erase, pressure=pressure)
        elif et == QEvent.Type.TabletMove:
            if self._tablet_down:
                self._canvas.continue_stroke(self.map_to_image(pos), pressure=pressure)
            elif self.is_panning() or self._stroking:
                event.ignore()
                return
        elif et == QEvent.Type.TabletRelease:
            if not self._tablet_down:
                event.ignore()
                return
            self._tablet_down = False
            self._canvas.end_stroke()
        else:
            event.ignore()
            return
        self._move_hover(pos)
        event.accept()
