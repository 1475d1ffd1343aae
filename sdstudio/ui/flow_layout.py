"""A layout that places its items left to right and wraps to a new line when the width runs
out (for tool rows that must fit a laptop screen), and :func:`wrap_row`, which turns a
QHBoxLayout of tool groups (separated by ToolSeparators or stretches) into one."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMargins, QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QHBoxLayout, QLayout, QLayoutItem, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Items in reading order; a line breaks before an item that would not fit."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6,
                 line_spacing: int = 2) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self._line_spacing = line_spacing
        self.setContentsMargins(0, 0, 0, 0)

    # QLayout's interface
    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:
        """One line: every item side by side."""
        m = self.contentsMargins()
        width = sum(i.sizeHint().width() for i in self._items)
        width += self._spacing * max(0, len(self._items) - 1)
        height = max((i.sizeHint().height() for i in self._items), default=0)
        return QSize(width + m.left() + m.right(), height + m.top() + m.bottom())

    def minimumSize(self) -> QSize:
        """The widest single item: everything else can wrap."""
        m = self.contentsMargins()
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _place(self, rect: QRect, move: bool) -> int:
        m: QMargins = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, line = area.x(), area.y(), 0
        for item in self._items:
            widget = item.widget()
            if widget is not None and widget.isHidden():
                continue
            hint = item.sizeHint()
            if x > area.x() and x + hint.width() > area.right() + 1:
                x, y, line = area.x(), y + line + self._line_spacing, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line = max(line, hint.height())
        return y + line - rect.y() + m.bottom()


class _Gap:
    def __init__(self, width: int) -> None:
        self.width = width


def wrap_row(row: QHBoxLayout, parent: QWidget) -> FlowLayout:
    """The widgets of ``row`` in groups that wrap as wholes: a group ends at a ToolSeparator
    or a stretch (dropped: a wrapped line needs neither). ``row`` is emptied."""
    flow = FlowLayout()
    group: list[Any] = []

    def close_group() -> None:
        if not group:
            return
        box = QWidget(parent)
        box.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(row.spacing())
        for w in group:
            if isinstance(w, _Gap):
                lay.addSpacing(w.width)
            else:
                lay.addWidget(w)
        flow.addWidget(box)
        group.clear()

    while row.count():
        item = row.takeAt(0)
        widget = item.widget() if item is not None else None
        if widget is None:  # a stretch or a wide spacing ends a group; a narrow one stays
            spacer = item.spacerItem() if item is not None else None
            if spacer is not None and spacer.sizeHint().width() < 8 and not (
                    spacer.expandingDirections() & Qt.Orientation.Horizontal):
                if group:
                    group.append(_Gap(spacer.sizeHint().width()))
                continue
            close_group()
            continue
        if type(widget).__name__ == "ToolSeparator":
            close_group()
            widget.deleteLater()
            continue
        group.append(widget)
    close_group()
    return flow
