"""The base of the main window's parts (mixins of MainWindow kept in their own modules)."""

from __future__ import annotations

from PySide6.QtWidgets import QMainWindow


class WindowPart:
    """A part of :class:`sdstudio.ui.main_window.MainWindow`; at run time ``self`` is the
    window, so Qt objects it creates take the window as their parent."""

    def _qt_parent(self) -> QMainWindow:
        assert isinstance(self, QMainWindow)
        return self
