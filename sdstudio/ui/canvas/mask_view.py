"""The viewer part of the mask canvas: draws the mask overlay and the brush cursor over the
image, and turns mouse and tablet input into strokes on its :class:`MaskCanvas`.

Left paints (erases with the eraser on), right always erases, a tablet's eraser end erases;
the middle button or space+drag pans (:class:`ImageViewer` does that). The grips just outside
the middle of each canvas edge drag that side's outpaint; the new area is drawn hatched in the
mask's colour (it is repainted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFocusEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QPointingDevice,
    QTabletEvent,
    QTransform,
)

from sdstudio.ui.canvas.mask_paint import MASK_RGB
from sdstudio.ui.canvas.viewer import ImageViewer

if TYPE_CHECKING:
    from sdstudio.ui.canvas.mask_canvas import MaskCanvas


HANDLE_DEPTH = 12.0  # widget pixels: an outpaint handle's grip beyond the canvas edge


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
        self._drag_side: str | None = None  # an outpaint edge handle being dragged
        self.setAttribute(Qt.WidgetAttribute.WA_TabletTracking, True)
        self.setMouseTracking(True)

    # ---------------------------------------------------------------- outpaint
    def content_rect(self) -> QRectF:
        """Fit shows the outpainted canvas, not only the image."""
        rect = self._canvas.outpaint_rect()
        return rect if rect is not None else super().content_rect()

    def dragging_side(self) -> bool:
        return self._drag_side is not None

    def handle_rects(self) -> dict[str, QRectF]:
        """The outpaint edge handles in widget coordinates: a grip just outside the middle
        half of each edge of the (extended) canvas."""
        rect = self._canvas.outpaint_rect()
        if rect is None:
            return {}
        r = QRectF(self.map_from_image(rect.topLeft()), self.map_from_image(rect.bottomRight()))
        t = HANDLE_DEPTH
        w4, h4 = r.width() / 4, r.height() / 4
        return {
            "left": QRectF(r.left() - t, r.top() + h4, t, 2 * h4),
            "right": QRectF(r.right(), r.top() + h4, t, 2 * h4),
            "top": QRectF(r.left() + w4, r.top() - t, 2 * w4, t),
            "bottom": QRectF(r.left() + w4, r.bottom(), 2 * w4, t),
        }

    def handle_at(self, pos: QPointF) -> str | None:
        for side, rect in self.handle_rects().items():
            if rect.contains(pos):
                return side
        return None

    def _drag_to(self, pos: QPointF) -> None:
        """The dragged side follows the pointer: its distance beyond the image's edge."""
        img = self.image_size()
        p = self.map_to_image(pos)
        beyond = {"left": -p.x(), "top": -p.y(), "right": p.x() - img.width(),
                  "bottom": p.y() - img.height()}
        assert self._drag_side is not None
        self._canvas.drag_side(self._drag_side, beyond[self._drag_side])

    def _paint_outpaint(self, painter: QPainter) -> None:
        """The new area (image coordinates): hatched in the mask's colour, it is repainted."""
        rect = self._canvas.outpaint_rect()
        if rect is None or not any(self._canvas.outpaint().values()):
            return
        img = QRectF(0, 0, self.image_size().width(), self.image_size().height())
        area = QPainterPath()
        area.addRect(rect)
        inner = QPainterPath()
        inner.addRect(img)
        area = area.subtracted(inner)
        painter.save()
        painter.fillPath(area, QColor(*MASK_RGB, 70))
        hatch = QBrush(QColor(*MASK_RGB, 200), Qt.BrushStyle.BDiagPattern)
        hatch.setTransform(QTransform.fromScale(1 / self.zoom(), 1 / self.zoom()))
        painter.fillPath(area, hatch)
        painter.restore()

    def _paint_handles(self, painter: QPainter) -> None:
        painter.save()
        for side, rect in self.handle_rects().items():
            grip = rect.adjusted(2, 2, -2, -2)
            active = side == self._drag_side
            painter.setPen(QPen(QColor(0, 0, 0, 160), 1))
            painter.setBrush(QColor(255, 255, 255, 230) if active else QColor(230, 230, 230, 170))
            painter.drawRoundedRect(grip, 3, 3)
        painter.restore()

    # ---------------------------------------------------------------- drawing
    def paint_image_overlay(self, painter: QPainter) -> None:
        overlay = self._canvas.overlay_image()
        if overlay is not None:
            painter.drawImage(0, 0, overlay)
        self._paint_outpaint(painter)

    def paint_foreground(self, painter: QPainter) -> None:
        if self.has_image():
            self._paint_handles(painter)
        area = self._canvas.masked_area_rect()
        if area is not None:
            r = QRectF(self.map_from_image(area.topLeft()), self.map_from_image(area.bottomRight()))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0, 150), 3))
            painter.drawRect(r)
            painter.setPen(QPen(QColor(255, 255, 255, 230), 1.2, Qt.PenStyle.DashLine))
            painter.drawRect(r)
        if self._hover is None or not self.has_image() or self.is_panning() or \
                self.space_held() or self._drag_side is not None or \
                self.handle_at(self._hover) is not None:  # the resize cursor instead
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
        was_handle = self._hover is not None and self.handle_at(self._hover) is not None
        self._hover = QPointF(pos) if pos is not None else None
        if was_handle != (self._hover is not None and self.handle_at(self._hover) is not None):
            self.update_cursor()
        self.update(old.toAlignedRect())
        self.update(self.cursor_rect(self._hover).toAlignedRect())

    def forget_stroke(self) -> None:
        """Drop the pointer state of a stroke the canvas has ended by itself (undo, clear...
        during a stroke): the rest of that drag paints nothing."""
        self._stroking = False
        self._tablet_down = False
        self._stroke_button = Qt.MouseButton.NoButton

    def update_cursor(self) -> None:
        if self._drag_side is not None or (
                self._hover is not None and self.handle_at(self._hover) is not None):
            side = self._drag_side or self.handle_at(self._hover or QPointF())
            self.setCursor(Qt.CursorShape.SizeHorCursor if side in ("left", "right")
                           else Qt.CursorShape.SizeVerCursor)
        elif self.is_panning():
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
        side = self.handle_at(event.position()) if b == Qt.MouseButton.LeftButton else None
        if side is not None and self.has_image() and not self.space_held():
            self._drag_side = side
            self.update_cursor()
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
        if self._drag_side is not None:
            self._drag_to(event.position())
            self._hover = QPointF(event.position())
            event.accept()
            return
        if self._stroking:
            self._canvas.continue_stroke(self.map_to_image(event.position()), pressure=1.0)
        self._move_hover(event.position())
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag_side is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag_to(event.position())
            self._drag_side = None
            if self.is_auto_fit():
                self.fit()
            self.update_cursor()
            event.accept()
            return
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
