"""The gallery on its own: listing a folder (and its sub-folders, 10,000 images), thumbnails
(through the disk cache, only for the rows in view) and full images made off the GUI thread,
the parameters text, the "send to" buttons, the right-click menu, drag-out, keys and full
screen."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QBuffer
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


# ============================================== issue 17, item 5: sub-folders, 10,000 images
def _tree(root: Path, layout: dict[str, float]) -> dict[str, str]:
    """Files (relative path -> mtime) under ``root``; returns relative -> absolute path."""
    out = {}
    for rel, mtime in layout.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n")  # the listing reads names and times only
        os.utime(path, (mtime, mtime))
        out[rel] = str(path)
    return out


def test_listing_goes_down_sub_folders_newest_first_within_bounds(tmp_path: Path) -> None:
    from sdstudio.ui.gallery import list_images

    deep = "/".join(f"d{i}" for i in range(7))
    files = _tree(tmp_path, {
        "top.png": 100, "batch-x/2026-01-02/00001.png": 300, "batch-x/2026-01-02/00002.PNG": 400,
        "a/b/c/d/e/f/six.png": 200, f"{deep}/seven.png": 500, ".hidden/h.png": 600,
        "batch-x/.partial.png": 700, "notes.txt": 800})
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # never followed
    found = list_images(tmp_path)
    assert found == [files["batch-x/2026-01-02/00002.PNG"], files["batch-x/2026-01-02/00001.png"],
                     files["a/b/c/d/e/f/six.png"], files["top.png"]]
    assert list_images(tmp_path, limit=2) == found[:2]
    assert list_images(tmp_path, max_depth=0) == [files["top.png"]]
    assert len(list_images(tmp_path, max_scanned=3)) < len(found)
    assert list_images(tmp_path / "missing") == []


def _wait_thumbs(qtbot: Any, gallery: Any, rows: range, timeout: int = 20_000) -> None:
    paths = gallery.paths()
    qtbot.waitUntil(lambda: all(gallery.has_thumbnail(paths[r]) for r in rows), timeout=timeout)


def test_ten_thousand_images_list_fast_and_thumbnails_come_from_the_cache(
        qtbot: Any, tmp_path: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui.gallery import GalleryWidget, list_images
    from sdstudio.ui.thumb_cache import ThumbCache

    out = tmp_path / "out"
    buffer = QBuffer()
    buffer.open(QBuffer.OpenModeFlag.WriteOnly)
    tile = QImage(16, 16, QImage.Format.Format_RGB32)
    tile.fill(QColor("teal"))
    assert tile.save(buffer, "PNG")
    data = bytes(buffer.data().data())
    n = 10_000
    for day in range(20):  # a batch with {date}/ in its pattern: two folders down
        folder = out / "batch-x" / f"2026-01-{day + 1:02d}"
        folder.mkdir(parents=True)
        for i in range(n // 20):
            index = day * (n // 20) + i
            path = folder / f"{index:05d}.png"
            path.write_bytes(data)
            os.utime(path, (1_000_000 + index, 1_000_000 + index))
    start = time.perf_counter()
    listed = list_images(out)
    took = time.perf_counter() - start
    assert len(listed) == n and listed[0].endswith("09999.png") and listed[-1].endswith("00000.png")
    assert took < 5.0, f"listing 10,000 images took {took:.2f} s"

    def open_gallery(cache: ThumbCache) -> tuple[Any, float]:
        gallery = GalleryWidget(thumb_cache=cache)
        qtbot.addWidget(gallery)
        gallery.resize(900, 600)
        gallery.show()
        qtbot.waitExposed(gallery)
        began = time.perf_counter()
        gallery.load_folder(out)
        qtbot.waitUntil(lambda: gallery.list.count() == n, timeout=20_000)
        QApplication.processEvents()
        _wait_thumbs(qtbot, gallery, gallery.visible_rows())
        return gallery, time.perf_counter() - began

    first = ThumbCache(tmp_path / "cache")
    gallery, took = open_gallery(first)
    try:
        rows = gallery.visible_rows()
        assert 0 < len(rows) < 200 and rows.start == 0
        assert gallery.paths()[0].endswith("09999.png")
        assert took < 15.0, f"10,000 images: first screen of thumbnails after {took:.2f} s"
        assert first.stats.made < 300  # the rows in view and one page ahead, not 10,000
        gallery.list.scrollToBottom()
        QApplication.processEvents()
        qtbot.waitUntil(lambda: gallery.visible_rows().stop == n, timeout=5000)
        _wait_thumbs(qtbot, gallery, gallery.visible_rows())
        assert first.stats.made < 600
    finally:
        gallery.shutdown()

    second = ThumbCache(tmp_path / "cache")  # the next start
    gallery, took = open_gallery(second)
    try:
        assert second.stats.made == 0 and second.stats.hits >= len(gallery.visible_rows())
    finally:
        gallery.shutdown()


def test_thumbnails_beyond_the_memory_bound_are_let_go(qtbot: Any, tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui import gallery as gallery_module
    from sdstudio.ui.thumb_cache import ThumbCache

    monkeypatch.setattr(gallery_module, "MAX_ICONS", 30)
    monkeypatch.setattr(gallery_module, "FIRST_ITEMS", 10)
    n = 150
    for i in range(n):
        _png(tmp_path / f"{i:03d}.png", "red", 8)
    cache = ThumbCache(tmp_path / "cache")
    gallery = gallery_module.GalleryWidget(thumb_cache=cache)
    qtbot.addWidget(gallery)
    gallery.resize(700, 400)
    gallery.show()
    try:
        gallery.load_folder(tmp_path)
        qtbot.waitUntil(lambda: gallery.list.count() == n)
        QApplication.processEvents()
        _wait_thumbs(qtbot, gallery, gallery.visible_rows())
        assert 0 < len(gallery.visible_rows()) <= 12
        top = gallery.paths()[0]
        bar = gallery.list.verticalScrollBar()
        for value in range(0, bar.maximum() + bar.pageStep(), bar.pageStep()):
            bar.setValue(value)  # scroll down page by page
            QApplication.processEvents()
            rows = gallery.visible_rows()
            assert rows.start > 0 or value == 0
            _wait_thumbs(qtbot, gallery, rows)
            held = sum(gallery.has_thumbnail(p) for p in gallery.paths())
            assert held <= 30
        assert gallery.visible_rows().stop == n
        assert not gallery.has_thumbnail(top)  # let go
        hits = cache.stats.hits
        bar.setValue(0)
        QApplication.processEvents()
        _wait_thumbs(qtbot, gallery, gallery.visible_rows())  # read back when seen again
        assert gallery.has_thumbnail(top) and cache.stats.hits > hits  # from the disk cache
    finally:
        gallery.shutdown()


# ================================================ issue 11, item 7: menu, drag, keys, full screen
def _made_image(folder: Path, seed: int) -> str:
    from PIL import Image

    from sdstudio.core.request import GenerationRequest
    from sdstudio.storage.png import save_image

    request = GenerationRequest(prompt="a lighthouse", seed=seed, width=64, height=64)
    return str(save_image(Image.new("RGB", (64, 64), (10, 200, 10)), request, None, folder))


def test_the_menu_of_a_gallery_image(qtbot: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from PySide6.QtWidgets import QApplication

    from sdstudio.ui.gallery import GalleryWidget
    from sdstudio.ui.result_actions import menu_action

    made = _made_image(tmp_path, 777)
    foreign = _png(tmp_path / "foreign.png", "blue")
    gallery = GalleryWidget()
    qtbot.addWidget(gallery)
    try:
        gallery.add_image(foreign)
        gallery.add_image(made, select=True)
        menu = gallery.context_menu()
        assert menu is not None
        names = [a.objectName() for a in menu.actions() if a.objectName()]
        assert "show_in_gallery" not in names and "delete" in names
        with qtbot.waitSignal(gallery.reuseSeed) as seed:
            menu_action(menu, "reuse_seed").trigger()
        assert seed.args == [777]
        with qtbot.waitSignal(gallery.reuseParameters) as reuse:
            menu_action(menu, "reuse_parameters").trigger()
        assert reuse.args == [made]
        with qtbot.waitSignal(gallery.sendToInpaint) as sent:
            menu_action(menu, "to_inpaint").trigger()
        assert sent.args == [made]
        menu_action(menu, "copy_parameters").trigger()
        text = QApplication.clipboard().text()
        assert text.startswith("a lighthouse") and "Seed: 777" in text
        menu_action(menu, "copy_image").trigger()
        mime = QApplication.clipboard().mimeData()
        assert mime.hasImage() and [u.toLocalFile() for u in mime.urls()] == [made]

        gallery.select_path(foreign)  # no parameters: nothing to reuse or copy
        menu = gallery.context_menu()
        assert menu is not None
        assert not menu_action(menu, "reuse_seed").isEnabled()
        assert not menu_action(menu, "reuse_parameters").isEnabled()
        assert not menu_action(menu, "copy_parameters").isEnabled()
        assert menu_action(menu, "to_img2img").isEnabled()
        monkeypatch.setattr(GalleryWidget, "_ask", lambda *a, **k: False)
        menu_action(menu, "delete").trigger()  # asks first: answered no
        assert Path(foreign).exists() and foreign in gallery.paths()
    finally:
        gallery.shutdown()


def test_keys_drag_out_and_full_screen_in_the_gallery(qtbot: Any, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    from PySide6.QtCore import QPoint, Qt

    from sdstudio.ui import result_actions
    from sdstudio.ui.gallery import GalleryWidget

    drags: list[Any] = []

    def fake_exec(drag: Any) -> Any:
        drags.append(drag.mimeData())
        return Qt.DropAction.CopyAction

    monkeypatch.setattr(result_actions, "exec_drag", fake_exec)
    paths = [_png(tmp_path / f"{i}.png", c) for i, c in enumerate(("red", "green", "blue"))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    gallery = GalleryWidget()
    qtbot.addWidget(gallery)
    gallery.resize(900, 500)
    gallery.show()
    qtbot.waitExposed(gallery)
    try:
        for p in paths:
            gallery.add_image(p)
        assert gallery.current_path() == paths[2]  # the newest
        qtbot.waitUntil(lambda: gallery.viewer.image() is not None)
        gallery.viewer.setFocus()
        for key, expected in ((Qt.Key.Key_Right, paths[1]), (Qt.Key.Key_End, paths[0]),
                              (Qt.Key.Key_Left, paths[1]), (Qt.Key.Key_Home, paths[2])):
            qtbot.keyClick(gallery.viewer, key)
            assert gallery.current_path() == expected
        qtbot.waitUntil(lambda: gallery.viewer_actions._target() is not None
                        and gallery.viewer_actions._target().path == paths[2])

        items = [gallery.list.item(0)]
        assert [u.toLocalFile() for u in gallery.list.mimeData(items).urls()] == [paths[2]]
        qtbot.waitUntil(lambda: not gallery.list.visualItemRect(gallery.list.item(1)).isEmpty())
        centre = gallery.list.visualItemRect(gallery.list.item(1)).center()
        viewport = gallery.list.viewport()
        qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=centre)
        for d in (5, 15, 30, 40):  # a thumbnail dragged with the mouse
            qtbot.mouseMove(viewport, centre + QPoint(d, d))
        qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=centre + QPoint(40, 40))
        assert [u.toLocalFile() for u in drags[-1].urls()] == [paths[1]]
        assert gallery.paths() == paths[::-1]  # a drag copies: nothing leaves the list

        gallery.list.setFocus()
        qtbot.keyClick(gallery.list, Qt.Key.Key_F)
        full = gallery._full_screen
        assert full is not None and full.isVisible() and full.current_path() == paths[1]
        qtbot.keyClick(full.viewer, Qt.Key.Key_Right)
        assert gallery.current_path() == paths[0]  # the selection follows
        qtbot.keyClick(full.viewer, Qt.Key.Key_Escape)
        assert not full.isVisible()

        gallery.add_image(str(broken), select=True)  # opened by the safe loader: refused
        qtbot.waitUntil(lambda: "damaged" in gallery.viewer.placeholder())
        assert gallery.viewer.image() is None
    finally:
        gallery.shutdown()
