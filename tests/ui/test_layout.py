"""The window fits a 1280x720 laptop screen with nothing clipped, and image-to-image and
inpaint results can be compared with their source (issue 11, defects 2-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.main_window import TAB_IMG2IMG


def test_the_window_fits_1280x720_and_clips_no_panel(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    assert w.minimumSizeHint().width() <= 1280
    w.resize(1280, 720)
    qtbot.waitUntil(lambda: w.width() <= 1280)
    for more in (False, True):
        w.prompt_panel.show_more(more)
        QApplication.processEvents()
        panel, viewport = w.prompt_panel, w.prompt_scroll.viewport()
        assert panel.width() <= viewport.width(), "the prompt panel is wider than it is shown"
        assert panel.width() >= panel.minimumSizeHint().width()
        # Generate stays in view under the scrolling panel, More options open or not
        button = panel.generate_button
        corner = button.mapTo(w, button.rect().bottomRight())
        assert button.isVisible() and w.rect().contains(corner)
        assert not button.visibleRegion().isEmpty()
    for index in range(w.tabs.count()):
        w.tabs.setCurrentIndex(index)
        QApplication.processEvents()
        page = w.tabs.widget(index)
        assert page.minimumSizeHint().width() <= page.width(), w.tabs.tabText(index)
    assert w.queue_dock.minimumSizeHint().width() <= 230


def test_compare_shows_the_source_left_of_the_divider(qtbot: Any, make_window: Any,
                                                      tmp_path: Path) -> None:
    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)
    source = QImage(64, 64, QImage.Format.Format_RGB32)
    source.fill(QColor(0, 0, 255))
    path = tmp_path / "blue.png"
    assert source.save(str(path))
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.source_canvas.load_file(str(path))
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a red fox")
    p.set_size(64, 64)
    p.widget("steps").setValue(1)
    p.widget("strength").setValue(1.0)
    w.generate()
    qtbot.waitUntil(lambda: w.queue.jobs() and w.queue.jobs()[0].state.finished,
                    timeout=10_000)
    viewer = w.img_result
    result = viewer.image()
    assert result is not None
    button = w._compare_buttons[id(viewer)]
    button.click()
    assert viewer.comparing()
    before = viewer.before_image()
    assert before is not None and before.size() == result.size()
    assert before.pixelColor(32, 32) == QColor(0, 0, 255)  # the source, as it was fitted
    viewer.set_split(0.5)
    shot = viewer.grab().toImage()
    rect = viewer.image_rect_in_widget()
    left = QPoint(int(rect.left() + rect.width() * 0.2), int(rect.center().y()) + 20)
    right = QPoint(int(rect.left() + rect.width() * 0.8), int(rect.center().y()) + 20)
    assert shot.pixelColor(left) == QColor(0, 0, 255)
    assert shot.pixelColor(right) == result.pixelColor(50, 40)
    qtbot.mouseClick(viewer, Qt.MouseButton.LeftButton,
                     pos=QPoint(int(rect.left() + rect.width() * 0.25), int(rect.center().y())))
    assert abs(viewer.split() - 0.25) < 0.05  # the divider follows the mouse
    button.click()
    assert not viewer.comparing()
