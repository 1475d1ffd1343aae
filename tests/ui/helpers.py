"""Helpers shared by the UI tests."""

from __future__ import annotations

from typing import Any


def send_drag_and_drop(target: Any, mime: Any, pos: Any = None) -> tuple[Any, Any]:
    """Send a drag-enter then a drop of ``mime`` at ``pos`` (default: the centre) to
    ``target``; returns both events so tests can check which were accepted."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    if pos is None:
        pos = QPoint(target.width() // 2, target.height() // 2)
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(pos, *args)
    QApplication.sendEvent(target, enter)
    drop = QDropEvent(pos, *args)
    QApplication.sendEvent(target, drop)
    return enter, drop
