"""Small vector icons for the canvas tool bars, drawn with QPainter at any size.

They take the palette's text colour when painted (so they follow a light or dark theme, and are
greyed out when disabled) and are sharp on HiDPI screens because nothing is a bitmap.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QIconEngine,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
    QRadialGradient,
)

Drawer = Callable[[QPainter, QColor], None]


def _pen(p: QPainter, color: QColor, width: float = 1.8) -> None:
    pen = QPen(color, width)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)


def _open(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    path = QPainterPath()
    path.moveTo(3, 19)
    path.lineTo(3, 6)
    path.lineTo(9, 6)
    path.lineTo(11, 8)
    path.lineTo(19, 8)
    path.lineTo(19, 11)
    p.drawPath(path)
    body = QPainterPath()
    body.moveTo(3, 19)
    body.lineTo(6.5, 11)
    body.lineTo(21.5, 11)
    body.lineTo(18, 19)
    body.closeSubpath()
    p.drawPath(body)


def _paste(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.drawRoundedRect(QRectF(5, 5, 14, 16), 2, 2)
    p.setBrush(c)
    p.drawRoundedRect(QRectF(9, 3, 6, 4), 1, 1)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawLine(QPointF(8.5, 12), QPointF(15.5, 12))
    p.drawLine(QPointF(8.5, 16), QPointF(13.5, 16))


def _remove(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.drawLine(QPointF(4, 6.5), QPointF(20, 6.5))
    p.drawLine(QPointF(9.5, 6.5), QPointF(10, 3.5))
    p.drawLine(QPointF(10, 3.5), QPointF(14, 3.5))
    p.drawLine(QPointF(14, 3.5), QPointF(14.5, 6.5))
    path = QPainterPath()
    path.moveTo(6, 6.5)
    path.lineTo(7, 20.5)
    path.lineTo(17, 20.5)
    path.lineTo(18, 6.5)
    p.drawPath(path)
    p.drawLine(QPointF(10, 10), QPointF(10, 17))
    p.drawLine(QPointF(14, 10), QPointF(14, 17))


def _brush(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.drawLine(QPointF(20.5, 3.5), QPointF(11.5, 12.5))
    p.setBrush(c)
    tip = QPainterPath()
    tip.moveTo(10.2, 11.2)
    tip.lineTo(12.8, 13.8)
    tip.cubicTo(13.5, 17.5, 10.5, 21, 3.5, 20.5)
    tip.cubicTo(5.5, 18.5, 5.0, 14.0, 10.2, 11.2)
    p.drawPath(tip)


def _eraser(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.save()
    p.translate(12, 12)
    p.rotate(-45)
    p.drawRoundedRect(QRectF(-9, -4.5, 18, 9), 1.5, 1.5)
    fill = QColor(c)
    fill.setAlphaF(0.9)
    p.setBrush(fill)
    p.drawRoundedRect(QRectF(-9, -4.5, 7, 9), 1.5, 1.5)
    p.restore()
    p.drawLine(QPointF(9, 20.5), QPointF(20.5, 20.5))


def _undo(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    path = QPainterPath()
    path.moveTo(5, 10)
    path.lineTo(15, 10)
    path.cubicTo(21, 10, 21, 19.5, 15, 19.5)
    path.lineTo(10, 19.5)
    p.drawPath(path)
    p.drawLine(QPointF(5, 10), QPointF(9, 6))
    p.drawLine(QPointF(5, 10), QPointF(9, 14))


def _redo(p: QPainter, c: QColor) -> None:
    p.save()
    p.translate(24, 0)
    p.scale(-1, 1)
    _undo(p, c)
    p.restore()


def _clear_mask(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    pen = p.pen()
    pen.setStyle(Qt.PenStyle.DashLine)
    pen.setWidthF(1.5)
    p.setPen(pen)
    p.drawRoundedRect(QRectF(4, 4, 16, 16), 2, 2)
    _pen(p, c)
    p.drawLine(QPointF(9, 9), QPointF(15, 15))
    p.drawLine(QPointF(15, 9), QPointF(9, 15))


def _fill(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    fill = QColor(c)
    fill.setAlphaF(0.85)
    p.setBrush(fill)
    p.drawRoundedRect(QRectF(4, 4, 16, 16), 2, 2)


def _invert(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.drawEllipse(QPointF(12, 12), 8, 8)
    p.setBrush(c)
    half = QPainterPath()
    half.moveTo(12, 4)
    half.arcTo(QRectF(4, 4, 16, 16), 90, 180)
    half.closeSubpath()
    p.drawPath(half)


def _arrow_over_tray(p: QPainter, c: QColor, tail_y: float, head_y: float) -> None:
    """A vertical arrow from ``tail_y`` to ``head_y`` above an open tray (save / load)."""
    _pen(p, c)
    barb = 4.5 if head_y > tail_y else -4.5
    p.drawLine(QPointF(12, tail_y), QPointF(12, head_y))
    p.drawLine(QPointF(12, head_y), QPointF(7.5, head_y - barb))
    p.drawLine(QPointF(12, head_y), QPointF(16.5, head_y - barb))
    path = QPainterPath()
    path.moveTo(4, 15)
    path.lineTo(4, 20)
    path.lineTo(20, 20)
    path.lineTo(20, 15)
    p.drawPath(path)


def _save(p: QPainter, c: QColor) -> None:
    _arrow_over_tray(p, c, tail_y=3.5, head_y=14)


def _load(p: QPainter, c: QColor) -> None:
    _arrow_over_tray(p, c, tail_y=14.5, head_y=4)


def _fit(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        x, y = 12 - 8 * sx, 12 - 8 * sy
        p.drawLine(QPointF(x, y), QPointF(x + 5 * sx, y))
        p.drawLine(QPointF(x, y), QPointF(x, y + 5 * sy))
    p.drawRect(QRectF(8.5, 8.5, 7, 7))


def _actual(p: QPainter, c: QColor) -> None:
    _pen(p, c)
    p.drawRoundedRect(QRectF(3.5, 5.5, 17, 13), 2, 2)
    font = p.font()
    font.setPixelSize(8)
    font.setBold(True)
    p.setFont(font)
    p.drawText(QRectF(3.5, 5.5, 17, 13), Qt.AlignmentFlag.AlignCenter, "1:1")


def _blur(p: QPainter, c: QColor) -> None:
    g = QRadialGradient(QPointF(12, 12), 9)
    inner = QColor(c)
    outer = QColor(c)
    outer.setAlpha(0)
    g.setColorAt(0.0, inner)
    g.setColorAt(0.45, inner)
    g.setColorAt(1.0, outer)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(g)
    p.drawEllipse(QPointF(12, 12), 9.5, 9.5)


DRAWERS: dict[str, Drawer] = {
    "open": _open,
    "paste": _paste,
    "remove": _remove,
    "brush": _brush,
    "eraser": _eraser,
    "undo": _undo,
    "redo": _redo,
    "clear-mask": _clear_mask,
    "fill": _fill,
    "invert": _invert,
    "save": _save,
    "load": _load,
    "fit": _fit,
    "actual-size": _actual,
    "blur": _blur,
}


class _VectorIconEngine(QIconEngine):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def _color(self, mode: QIcon.Mode, state: QIcon.State) -> QColor:
        pal = QGuiApplication.palette()
        if mode == QIcon.Mode.Disabled:
            # derived from the active text colour: custom palettes often leave the
            # disabled group unset, which would make disabled icons look enabled
            c = QColor(pal.color(QPalette.ColorGroup.Active, QPalette.ColorRole.WindowText))
            c.setAlphaF(0.35)
            return c
        if mode == QIcon.Mode.Selected:
            return pal.color(QPalette.ColorRole.HighlightedText)
        if state == QIcon.State.On:
            return pal.color(QPalette.ColorRole.Highlight)
        return pal.color(QPalette.ColorRole.WindowText)

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.translate(rect.topLeft())
        side = min(rect.width(), rect.height())
        painter.translate((rect.width() - side) / 2.0, (rect.height() - side) / 2.0)
        painter.scale(side / 24.0, side / 24.0)
        DRAWERS[self._name](painter, self._color(mode, state))
        painter.restore()

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        pm = QPixmap(size)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        self.paint(p, QRect(0, 0, size.width(), size.height()), mode, state)
        p.end()
        return pm

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State,
                     scale: float) -> QPixmap:
        pm = QPixmap(QSize(round(size.width() * scale), round(size.height() * scale)))
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        self.paint(p, QRect(0, 0, pm.width(), pm.height()), mode, state)
        p.end()
        pm.setDevicePixelRatio(scale)
        return pm

    def clone(self) -> QIconEngine:
        return _VectorIconEngine(self._name)


def icon(name: str) -> QIcon:
    """The named vector icon (see :data:`DRAWERS`)."""
    if name not in DRAWERS:
        raise KeyError(f"no icon named {name!r}")
    return QIcon(_VectorIconEngine(name))
