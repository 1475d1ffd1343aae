"""Ctrl+O opens an image into a canvas (image to image from Text to image); restoring an
image's parameters is its own action; Ctrl+V pastes an image window-wide on the image tabs
while text boxes keep their own paste (issue 17, items 3 and 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui import file_dialogs
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_INPAINT, TAB_TXT2IMG

CTRL = Qt.KeyboardModifier.ControlModifier


def _png_with_parameters(path: Path) -> str:
    from sdstudio.core.request import GenerationInfo, GenerationRequest
    from sdstudio.storage.png import save_image
    from sdstudio.ui.imageutil import qimage_to_pil

    image = QImage(32, 32, QImage.Format.Format_RGB32)
    image.fill(QColor("green"))
    saved = save_image(qimage_to_pil(image), GenerationRequest(prompt="a green field",
                                                               seed=77),
                       GenerationInfo(), path.parent, pattern=path.stem)
    return str(saved)


def test_ctrl_o_on_text_to_image_opens_into_image_to_image(qtbot: Any, make_window: Any,
                                                           tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    w = make_window(fake=FakeScript())
    png = _png_with_parameters(tmp_path / "made")
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    w.prompt_panel.prompt_edit.setPlainText("mine")
    w.open_path(png)
    assert w.tabs.currentIndex() == TAB_IMG2IMG and w.source_canvas.image() is not None
    assert w.prompt_panel.prompt_edit.toPlainText() == "mine"  # nothing restored behind
    monkeypatch.setattr(file_dialogs, "open_file", lambda *a, **k: png)
    w.restore_parameters_dialog()
    assert w.prompt_panel.prompt_edit.toPlainText() == "a green field"
    assert w.prompt_panel.control("seed").value() == 77


def test_ctrl_v_pastes_images_window_wide_but_not_into_text(qtbot: Any,
                                                            make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    picture = QImage(40, 30, QImage.Format.Format_RGB32)
    picture.fill(QColor("red"))
    QApplication.clipboard().setImage(picture)
    w.tabs.setCurrentIndex(TAB_INPAINT)
    w.prompt_panel.generate_button.setFocus()
    qtbot.keyClick(w.prompt_panel.generate_button, Qt.Key.Key_V, CTRL)
    assert w.mask_canvas.image() is not None and w.mask_canvas.image().width() == 40
    assert w.source_canvas.image() is None
    QApplication.clipboard().setText("a cat")
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    edit = w.prompt_panel.prompt_edit
    edit.setPlainText("")
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_V, CTRL)
    assert edit.toPlainText() == "a cat"  # the text box kept its paste
    assert w.tabs.currentIndex() == TAB_TXT2IMG and w.source_canvas.image() is None
