"""F1 shows the user guide inside the app; file dialogs start in the folder last used for
that kind of file (else Pictures or home), remembered across launches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QImage, QTextDocument

from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui import file_dialogs


def test_f1_shows_the_guide_with_its_screenshots_scaled(qtbot: Any, make_window: Any,
                                                        monkeypatch: Any) -> None:
    w = make_window(fake=FakeScript())
    opened: list[QUrl] = []
    monkeypatch.setattr("PySide6.QtGui.QDesktopServices.openUrl", opened.append)
    w.open_user_guide()
    help_window = w._help_window
    assert help_window is not None and help_window.isVisible()
    text = help_window.browser.toPlainText()
    assert "Text to image" in text and "Gallery" in text
    shot = help_window.browser.loadResource(QTextDocument.ResourceType.ImageResource.value,
                                            QUrl("screenshots/text-to-image.png"))
    assert isinstance(shot, QImage) and not shot.isNull()
    assert shot.width() <= max(200, help_window.browser.viewport().width())
    # web links go to the browser; files outside docs/ are not shown
    help_window.browser.follow(QUrl("https://example.org/x"))
    assert opened == [QUrl("https://example.org/x")]
    before = help_window.browser.source()
    help_window.browser.follow(QUrl("../README.md"))
    assert help_window.browser.source() == before
    assert help_window.browser.loadResource(QTextDocument.ResourceType.ImageResource.value,
                                            QUrl("../resources/icons/sdstudio.svg")) is None
    help_window.find_edit.setText("Inpaint")
    assert help_window.find_next()
    w.open_user_guide()  # F1 again: the same window
    assert w._help_window is help_window


def test_dialogs_start_where_that_kind_was_last_opened(qtbot: Any, make_window: Any,
                                                       tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    file_dialogs.load({})
    assert file_dialogs.start_dir("models") == str(tmp_path)
    asked: list[str] = []

    def fake_open(parent: Any, title: str, start: str, filters: str) -> tuple[str, str]:
        asked.append(start)
        return (str(images / "cat.png"), "")

    images = tmp_path / "pics"
    images.mkdir()
    monkeypatch.setattr("PySide6.QtWidgets.QFileDialog.getOpenFileName", fake_open)
    assert file_dialogs.open_file(None, "images", "Open", "*") == str(images / "cat.png")
    assert file_dialogs.open_file(None, "images", "Open", "*")
    assert asked[1] == str(images)  # the second dialog starts where the first ended
    assert file_dialogs.start_dir("models") == str(tmp_path)  # other kinds keep theirs

    w = make_window(fake=FakeScript())
    file_dialogs.remember("images", str(images / "cat.png"))
    w._persist()
    assert w.settings.ui["dialog_folders"]["images"] == str(images)
    file_dialogs.load({"images": 5, "bogus": "/x", "masks": str(tmp_path / "gone")})
    assert file_dialogs.saved() == {"masks": str(tmp_path / "gone")}
    assert file_dialogs.start_dir("masks") != str(tmp_path / "gone")  # not a folder any more
