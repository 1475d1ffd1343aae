"""The gallery on its own: listing a folder, thumbnails and full images made off the GUI thread,
the parameters text, and the "send to" buttons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QColor, QImage


def _png(path: Path, color: str, size: int = 64) -> str:
    image = QImage(size, size, QImage.Format.Format_RGB32)
    image.fill(QColor(color))
    assert image.save(str(path))
    return str(path)


def test_folder_thumbnails_full_image_info_and_send(qtbot: Any, tmp_path: Path) -> None:
    from sdstudio.ui.gallery import GalleryWidget

    first = _png(tmp_path / "a.png", "red")
    second = _png(tmp_path / "b.png", "blue", 300)
    gallery = GalleryWidget()
    qtbot.addWidget(gallery)
    try:
        gallery.load_folder(tmp_path)
        qtbot.waitUntil(lambda: sorted(gallery.paths()) == sorted([first, second]))
        qtbot.waitUntil(lambda: all(not gallery.list.item(i).icon().isNull()
                                    for i in range(gallery.list.count())))
        gallery.select_path(second)
        qtbot.waitUntil(lambda: gallery.viewer.image() is not None)
        image = gallery.viewer.image()
        assert image is not None and image.width() == 300  # the full image, not the thumbnail
        qtbot.waitUntil(lambda: gallery.info.text() != "…")

        made = tmp_path / "new.png"
        fresh = QImage(40, 20, QImage.Format.Format_RGB32)
        fresh.fill(QColor("green"))
        assert fresh.save(str(made))
        gallery.add_image(str(made), fresh, select=True)
        assert gallery.paths()[0] == str(made) and gallery.current_path() == str(made)
        qtbot.waitUntil(lambda: not gallery.list.item(0).icon().isNull())

        with qtbot.waitSignal(gallery.sendToImg2img) as sent:
            gallery.img2img_button.click()
        assert sent.args == [str(made)]
    finally:
        gallery.shutdown()


def _gallery_with(qtbot: Any, tmp_path: Path, monkeypatch: Any, answers: list[bool]
                  ) -> tuple[Any, list[str], Path]:
    """A gallery over tmp_path/out with one image selected; its questions answered from
    ``answers`` (and recorded); the freedesktop trash in tmp_path/data."""
    from sdstudio.ui.gallery import GalleryWidget

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    out = tmp_path / "out"
    out.mkdir()
    path = _png(out / "cat.png", "red")
    asked: list[str] = []

    def ask(self: Any, title: str, text: str, yes_text: str) -> bool:
        asked.append(yes_text)
        return answers.pop(0)

    monkeypatch.setattr(GalleryWidget, "_ask", ask)
    gallery = GalleryWidget()
    qtbot.addWidget(gallery)
    gallery.add_image(path, select=True)
    assert gallery.current_path() == path
    return gallery, asked, data


def test_delete_asks_first_and_moves_to_the_trash_with_undo(qtbot: Any, tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    gallery, asked, data = _gallery_with(qtbot, tmp_path, monkeypatch, [False, True])
    path = gallery.current_path()
    try:
        gallery.delete_button.click()  # the button asks (Qt's checked=False is not confirm)
        assert asked == ["Move to Trash"] and Path(path).exists()
        assert gallery.paths() == [path]
        with qtbot.waitSignal(gallery.message) as said:
            gallery.delete_button.click()
        assert not Path(path).exists() and gallery.paths() == []
        assert (data / "Trash" / "files" / "cat.png").exists()
        assert "trash" in said.args[1] and "Ctrl+Z" in said.args[1]
        assert gallery.undo_button.isEnabled()
        gallery.undo_button.click()
        assert Path(path).exists() and gallery.paths() == [path]
        assert not (data / "Trash" / "files" / "cat.png").exists()
        assert not (data / "Trash" / "info" / "cat.png.trashinfo").exists()
        assert not gallery.undo_button.isEnabled()
    finally:
        gallery.shutdown()


def test_delete_key_asks_and_undo_refuses_to_overwrite(qtbot: Any, tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    from PySide6.QtCore import Qt

    gallery, asked, _ = _gallery_with(qtbot, tmp_path, monkeypatch, [True])
    path = gallery.current_path()
    try:
        gallery.show()
        qtbot.waitExposed(gallery)
        gallery.activateWindow()  # window shortcuts need an active window
        with qtbot.waitActive(gallery, timeout=3000):
            pass
        gallery.list.setFocus()
        qtbot.keyClick(gallery.list, Qt.Key.Key_Delete)
        assert asked == ["Move to Trash"] and not Path(path).exists()
        _png(Path(path), "blue")  # a new file of the same name
        assert not gallery.undo_delete()
        assert gallery.undo_button.isEnabled()  # still in the trash, can be tried again
    finally:
        gallery.shutdown()


def test_without_a_trash_it_asks_again_before_deleting_for_good(qtbot: Any, tmp_path: Path,
                                                                monkeypatch: Any) -> None:
    from sdstudio.ui import gallery as gallery_module

    monkeypatch.setattr(gallery_module, "move_to_trash", lambda path: None)
    gallery, asked, _ = _gallery_with(qtbot, tmp_path, monkeypatch, [True, False, True, True])
    path = gallery.current_path()
    try:
        assert not gallery.delete_current()
        assert asked == ["Move to Trash", "Delete for Good"] and Path(path).exists()
        assert gallery.delete_current()
        assert not Path(path).exists() and gallery.paths() == []
        assert not gallery.undo_button.isEnabled()
    finally:
        gallery.shutdown()
