"""Every Alt + underlined letter does what it shows: within a window (or dialog) no two
things visible at the same time share a mnemonic (issue 17, item 1). Tabs switch with
Alt+1 … Alt+5 instead, so their titles carry none."""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QGroupBox,
    QLabel,
    QTabWidget,
    QWidget,
)

from sdstudio.testing.fake_engine import FakeScript

_MNEMONIC = re.compile(r"&([^&\s])")


def letter(text: str) -> str | None:
    m = _MNEMONIC.search(text.replace("&&", ""))
    return m.group(1).lower() if m else None


def visible_mnemonics(root: QWidget) -> dict[str, list[str]]:
    """letter -> what shows it, for the menus, tab titles and visible labelled widgets."""
    seen: dict[str, list[str]] = {}

    def add(text: str, what: str) -> None:
        key = letter(text)
        if key:
            seen.setdefault(key, []).append(f"{what} {text!r}")

    menu_bar = getattr(root, "menuBar", None)
    if callable(menu_bar):
        for action in menu_bar().actions():
            add(action.text(), "menu")
    for tabs in root.findChildren(QTabWidget):
        if tabs.isVisible():
            for i in range(tabs.count()):
                add(tabs.tabText(i), "tab")
    for widget in root.findChildren(QWidget):
        if not widget.isVisible():
            continue
        if isinstance(widget, QLabel) and widget.buddy() is not None:
            add(widget.text(), "label")
        elif isinstance(widget, QAbstractButton):
            add(widget.text(), type(widget).__name__)
        elif isinstance(widget, QGroupBox):
            add(widget.title(), "group")
    return seen


def clashes(root: QWidget) -> dict[str, list[str]]:
    return {k: v for k, v in visible_mnemonics(root).items() if len(v) > 1}


def test_the_main_window_has_no_mnemonic_twice(qtbot: Any, make_window: Any) -> None:
    from sdstudio.app import _add_optional_panels

    w = make_window(fake=FakeScript())
    _add_optional_panels(w, w.queue)  # the batch tab, as the app adds it
    w.resize(1600, 1000)
    w.show_error("something failed", "details")  # the message bar's buttons too
    found = []
    for more, hires in ((False, False), (True, False), (False, True), (True, True)):
        w.prompt_panel.show_more(more)
        w.prompt_panel.show_hires(hires)  # the hires fix section open too
        for index in range(w.tabs.count()):
            w.tabs.setCurrentIndex(index)
            QApplication.processEvents()
            bad = clashes(w)
            if bad:
                found.append((w.tabs.tabText(index), more, hires, bad))
    assert not found, found
    assert letter(w.tabs.tabText(0)) is None  # tabs use Alt+1 … Alt+5


def test_the_settings_dialog_has_no_mnemonic_twice(qtbot: Any) -> None:
    from sdstudio.core.settings import Settings
    from sdstudio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.show()
    for index in range(dialog.tabs.count()):
        dialog.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        assert not clashes(dialog), (dialog.tabs.tabText(index), clashes(dialog))


def test_the_checker_finds_a_clash(qtbot: Any) -> None:
    from PySide6.QtWidgets import QPushButton, QVBoxLayout

    box = QWidget()
    qtbot.addWidget(box)
    lay = QVBoxLayout(box)
    lay.addWidget(QPushButton("&Save"))
    lay.addWidget(QPushButton("&Send"))
    box.show()
    assert set(clashes(box)) == {"s"}
