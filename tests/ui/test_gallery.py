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
