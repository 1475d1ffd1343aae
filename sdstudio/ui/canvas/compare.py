"""Before and after in one view: the result with its source shown left of a divider that the
left mouse button drags (the arrow keys move it too; pan with the middle button or
space + drag). Used for the image-to-image and inpaint results."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from sdstudio.ui.canvas.viewer import ImageViewer

BeforeSource = Callable[[], QImage | None]


class CompareViewer(ImageViewer):
    """An :class:`ImageViewer` of a result that can show its "before" image beside it."""

    compareChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._compare = False
        self._split = 0.5  # the divider, as a fraction of the image's width
        self._before: QPixmap | None = None
        self._before_source: BeforeSource | None = None
        self._dragging = False

    # ------------------------------------------------------------------ API
    def set_before_source(self, source: BeforeSource | None) -> None:
        """Where the "before" image comes from (asked only while comparing: it may read a
        file); the image is shown at the result's size."""
        self._before_source = source
        self._before = None
        if self._compare:
            self._load_before()
        self.update()

    def set_image(self, image: QImage | None, smooth: bool = False) -> None:
        super().set_image(image, smooth)
        if self._compare and not smooth:  # a finished result (previews are smooth)
            self._load_before()

    def set_compare(self, on: bool) -> None:
        if on == self._compare:
            return
        self._compare = on
        if on:
            self._load_before()
        self.update_cursor()
        self.update()
        self.compareChanged.emit(on)

    def comparing(self) -> bool:
        return self._compare

    def split(self) -> float:
        return self._split

    def set_split(self, fraction: float) -> None:
        self._split = min(1.0, max(0.0, fraction))
        self.update()

    def before_image(self) -> QImage | None:
        return self._before.toImage() if self._before is not None else None

    def _load_before(self) -> None:
        image = self.image()
        before = self._before_source() if self._before_source is not None else None
        if image is None or before is None or before.isNull():
            self._before = None
            return
        if before.size() != image.size():
            before = before.scaled(image.size(), Qt.AspectRatioMode.IgnoreAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self._before = QPixmap.fromImage(before)

    # ------------------------------------------------------------------ painting
    def _showing(self) -> bool:
        return (self._compare and self._before is not None and self.image() is not None
                and not self.showing_preview())

    def paint_image_overlay(self, painter: QPainter) -> None:
        if not self._showing():
            return
        assert self._before is not None
        w, h = self._before.width(), self._before.height()
        cut = w * self._split
        painter.drawPixmap(QRectF(0, 0, cut, h), self._before, QRectF(0, 0, cut, h))

    def paint_foreground(self, painter: QPainter) -> None:
        if not self._showing():
            return
        rect = self.image_rect_in_widget()
        x = rect.left() + rect.width() * self._split
        painter.setPen(QPen(QColor(255, 255, 255, 230), 2))
        painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        painter.setPen(QPen(QColor(0, 0, 0, 120), 1))
        painter.drawLine(QPointF(x + 1.5, rect.top()), QPointF(x + 1.5, rect.bottom()))
        mid = QPointF(x, rect.center().y())
        painter.setBrush(QColor(255, 255, 255, 230))
        painter.drawEllipse(mid, 9, 9)
        self._label(painter, "Before", QPointF(rect.left() + 8, rect.top() + 8), left=True)
        self._label(painter, "After", QPointF(rect.right() - 8, rect.top() + 8), left=False)

    @staticmethod
    def _label(painter: QPainter, text: str, at: QPointF, left: bool) -> None:
        metrics = painter.fontMetrics()
        w, h = metrics.horizontalAdvance(text) + 12, metrics.height() + 4
        box = QRectF(at.x() if left else at.x() - w, at.y(), w, h)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 140))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor("white"))
        painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), text)

    # ------------------------------------------------------------------ input
    def _split_at(self, pos: QPointF) -> None:
        rect = self.image_rect_in_widget()
        if rect.width() > 0:
            self.set_split((pos.x() - rect.left()) / rect.width())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if (self._showing() and event.button() == Qt.MouseButton.LeftButton
                and not self.space_held()):
            self.setFocus(Qt.FocusReason.MouseFocusReason)
            self._dragging = True
            self._split_at(event.position())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._dragging:
            self._split_at(event.position())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._dragging and event.button() == Qt.MouseButton.LeftButton:
            self._dragging = False
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._showing():
            event.accept()  # a double click while comparing is two divider moves, no fit
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        step = {Qt.Key.Key_Left: -0.05, Qt.Key.Key_Right: 0.05}.get(Qt.Key(event.key()))
        if self._showing() and step is not None:
            self.set_split(self._split + step)
            event.accept()
            return
        super().keyPressEvent(event)

    def update_cursor(self) -> None:
        if self._showing() and not self.space_held() and not self.is_panning():
            self.setCursor(Qt.CursorShape.SplitHCursor)
        else:
            super().update_cursor()
