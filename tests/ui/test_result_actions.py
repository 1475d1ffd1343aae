"""Results you can act on (issue 11, item 7): the right-click menu of a result, its
parameters under it, dragging it out (without taking the left button from panning), the
full-screen viewer with zoom and Left/Right/Home/End."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui import result_actions
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_INPAINT, TAB_TXT2IMG
from tests.ui.helpers import send_drag_and_drop


def _png(path: Path, color: str, size: tuple[int, int] = (64, 48)) -> str:
    image = QImage(size[0], size[1], QImage.Format.Format_RGB32)
    image.fill(QColor(color))
    assert image.save(str(path))
    return str(path)


@pytest.fixture
def drags(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Drags started (their mime data), instead of a real drag waiting for the mouse."""
    started: list[Any] = []

    def fake_exec(drag: Any) -> Qt.DropAction:
        started.append(drag.mimeData())
        return Qt.DropAction.CopyAction

    monkeypatch.setattr(result_actions, "exec_drag", fake_exec)
    return started


def _drag(qtbot: Any, widget: Any, modifier: Any = Qt.KeyboardModifier.NoModifier) -> None:
    centre = QPoint(widget.width() // 2, widget.height() // 2)
    qtbot.mousePress(widget, Qt.MouseButton.LeftButton, modifier, centre)
    for dx in (5, 15, 30):
        qtbot.mouseMove(widget, centre + QPoint(dx, dx))
    qtbot.mouseRelease(widget, Qt.MouseButton.LeftButton, modifier, centre + QPoint(30, 30))


def _shown(qtbot: Any, viewer: Any, tmp_path: Path) -> tuple[Any, str]:
    """``viewer`` shown with an image file and the drag-out / full-screen actions on it."""
    path = _png(tmp_path / "cat.png", "red")
    qtbot.addWidget(viewer)
    viewer.resize(300, 300)
    viewer.show()
    qtbot.waitExposed(viewer)
    image = QImage(path)
    viewer.set_image(image)
    result_actions.ViewerActions(viewer, lambda: result_actions.ResultTarget(path, image),
                                 lambda: None)
    return viewer, path


def test_drag_out_while_fitted_and_with_ctrl_but_panning_when_zoomed(
        qtbot: Any, tmp_path: Path, drags: list[Any]) -> None:
    from sdstudio.ui.canvas.viewer import ImageViewer

    viewer, path = _shown(qtbot, ImageViewer(), tmp_path)
    assert viewer.is_auto_fit()
    _drag(qtbot, viewer)
    assert len(drags) == 1
    assert [u.toLocalFile() for u in drags[0].urls()] == [path] and drags[0].hasImage()
    assert viewer.is_auto_fit()  # it did not pan

    viewer.set_zoom(4.0)
    before = viewer.offset()
    _drag(qtbot, viewer)
    assert len(drags) == 1  # zoomed in, the left button pans
    assert viewer.offset() != before

    _drag(qtbot, viewer, Qt.KeyboardModifier.ControlModifier)
    assert len(drags) == 2  # Ctrl + drag drags out at any zoom


def test_comparing_keeps_the_divider_on_the_left_button(qtbot: Any, tmp_path: Path,
                                                       drags: list[Any]) -> None:
    from sdstudio.ui.canvas.compare import CompareViewer

    viewer, _path = _shown(qtbot, CompareViewer(), tmp_path)
    source = QImage(viewer.image().size(), QImage.Format.Format_RGB32)
    source.fill(QColor("blue"))
    viewer.set_before_source(lambda: source)
    viewer.set_compare(True)
    viewer.set_split(0.5)
    _drag(qtbot, viewer)
    assert drags == [] and viewer.split() > 0.5  # the divider followed the mouse
    _drag(qtbot, viewer, Qt.KeyboardModifier.ControlModifier)
    assert len(drags) == 1


def test_full_screen_steps_zooms_and_closes(qtbot: Any, tmp_path: Path) -> None:
    paths = [_png(tmp_path / f"{i}.png", c, (40 + 10 * i, 40)) for i, c in
             enumerate(("red", "green", "blue"))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    full = result_actions.FullScreenViewer()
    qtbot.addWidget(full)
    seen: list[str] = []
    full.currentChanged.connect(seen.append)
    full.show_images([*paths, str(broken)], 1)
    qtbot.waitExposed(full)
    shown = full.viewer.image()
    assert full.isFullScreen() and shown is not None and shown.width() == 50
    assert "2 / 4" in full.caption.text()
    keys = [(Qt.Key.Key_Right, 2), (Qt.Key.Key_Left, 1), (Qt.Key.Key_Home, 0),
            (Qt.Key.Key_Left, 0), (Qt.Key.Key_End, 3)]
    for key, index in keys:
        qtbot.keyClick(full.viewer, key)
        assert full.index() == index
    assert full.viewer.image() is None and "damaged" in full.viewer.placeholder()
    qtbot.keyClick(full.viewer, Qt.Key.Key_Home)
    assert seen == [paths[1], paths[2], paths[1], paths[0], str(broken), paths[0]]
    fitted = full.viewer.zoom()
    qtbot.keyClick(full.viewer, Qt.Key.Key_Plus)
    assert full.viewer.zoom() > fitted
    qtbot.keyClick(full.viewer, Qt.Key.Key_0)
    assert full.viewer.zoom() == pytest.approx(fitted)
    qtbot.keyClick(full.viewer, Qt.Key.Key_Escape)
    assert not full.isVisible()


def _generate(qtbot: Any, w: Any, tab: int = TAB_TXT2IMG) -> Any:
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)
    w.tabs.setCurrentIndex(tab)
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a red fox")
    p.set_size(64, 64)
    p.widget("steps").setValue(2)
    p.control("seed").set_value(4242)
    count = len(w.queue.jobs())
    w.generate()
    qtbot.waitUntil(lambda: len(w.queue.jobs()) > count and w.queue.jobs()[-1].state.finished,
                    timeout=10_000)
    job = w.queue.jobs()[-1]
    assert job.images, job.failure
    return job


def test_a_result_shows_its_parameters_and_its_menu_acts_on_it(
        qtbot: Any, make_window: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.ui.gallery import GalleryWidget

    w = make_window(fake=FakeScript())
    assert w.result_menu(w.txt_viewer) is None  # nothing to act on yet
    pane = w.result_pane(w.txt_viewer)
    assert not pane.info.isVisible()
    job = _generate(qtbot, w)
    path = job.images[0]
    qtbot.waitUntil(lambda: w.gallery.paths()[:1] == [path])
    assert pane.info.isVisible() and pane.info.isEnabled()
    text = pane.info.toPlainText()
    assert text.startswith("a red fox") and "Seed: 4242" in text and "Steps: 2" in text
    assert pane.info.geometry().bottom() <= pane.info.parentWidget().height()  # not clipped

    menu = w.result_menu(w.txt_viewer)
    act = {a.objectName(): a for a in menu.actions() if a.objectName()}
    assert all(a.isEnabled() for a in act.values())
    assert set(act) == {"to_img2img", "to_inpaint", "upscale", "reuse_parameters", "reuse_seed",
                        "copy_image", "copy_parameters", "open_folder", "show_in_gallery",
                        "full_screen", "delete"}
    act["copy_parameters"].trigger()
    assert QApplication.clipboard().text() == text
    act["copy_image"].trigger()
    copied = QApplication.clipboard().image()
    assert copied.size() == w.txt_viewer.image().size()
    w.prompt_panel.control("seed").set_value(-1)
    act["reuse_seed"].trigger()
    assert w.prompt_panel.control("seed").value() == 4242
    act["show_in_gallery"].trigger()
    assert w.tabs.currentWidget() is w.gallery and w.gallery.current_path() == path
    act["full_screen"].trigger()
    full = w.gallery._full_screen
    assert full is not None and full.isVisible() and full.current_path() == path
    full.close()
    act["to_inpaint"].trigger()
    assert w.tabs.currentIndex() == TAB_INPAINT and w.mask_canvas.image() is not None

    monkeypatch.setattr(GalleryWidget, "_ask", lambda *a, **k: True)
    monkeypatch.setattr("sdstudio.ui.gallery.move_to_trash", lambda p: None)
    act["delete"].trigger()
    assert not Path(path).exists() and path not in w.gallery.paths()
    assert w.txt_viewer.image() is None and not pane.info.isVisible()
    assert w.result_menu(w.txt_viewer) is None


def test_a_result_drags_onto_the_image_to_image_canvas(qtbot: Any, make_window: Any,
                                                       drags: list[Any]) -> None:
    w = make_window(fake=FakeScript())
    job = _generate(qtbot, w)
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    qtbot.waitUntil(lambda: w.txt_viewer.isVisible())
    _drag(qtbot, w.txt_viewer)
    assert len(drags) == 1 and [u.toLocalFile() for u in drags[0].urls()] == job.images
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.source_canvas.image() is None
    enter, drop = send_drag_and_drop(w.source_canvas, drags[0])
    assert enter.isAccepted() and drop.isAccepted()
    loaded = w.source_canvas.image()
    assert loaded is not None and loaded.pixelColor(10, 10) == \
        w.txt_viewer.image().pixelColor(10, 10)


def test_the_img2img_result_has_its_own_parameters_and_f_opens_full_screen(
        qtbot: Any, make_window: Any, tmp_path: Path) -> None:
    w = make_window(fake=FakeScript())
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.source_canvas.load_file(_png(tmp_path / "src.png", "blue", (64, 64)))
    job = _generate(qtbot, w, TAB_IMG2IMG)
    pane = w.result_pane(w.img_result)
    assert "Denoising strength" in pane.info.toPlainText() and pane.info.isVisible()
    assert not w.result_pane(w.txt_viewer).info.isVisible()  # the other tab has none
    w.img_result.setFocus()
    qtbot.keyClick(w.img_result, Qt.Key.Key_F)
    full = w.gallery._full_screen
    assert full is not None and full.isVisible() and full.current_path() == job.images[0]
    qtbot.keyClick(full.viewer, Qt.Key.Key_F)
    assert not full.isVisible()


def test_a_preview_greys_the_parameters_of_the_last_image(qtbot: Any,
                                                         make_window: Any) -> None:
    script = FakeScript()
    w = make_window(fake=script)
    _generate(qtbot, w)
    pane = w.result_pane(w.txt_viewer)
    greyed: list[bool] = []
    w.queue.jobPreview.connect(lambda *a: greyed.append(not pane.info.isEnabled()))
    script.step_delay = 0.05
    _generate(qtbot, w)
    assert greyed and all(greyed)
    assert pane.info.isEnabled()
