"""ImageViewer: fit, wheel zoom around the cursor, panning, placeholder."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QWheelEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from sdstudio.ui.canvas.viewer import WHEEL_STEP, ImageViewer


def _image(w: int = 200, h: int = 100) -> QImage:
    img = QImage(w, h, QImage.Format.Format_RGB888)
    img.fill(QColor(10, 120, 200))
    return img


@pytest.fixture
def viewer(qtbot: QtBot) -> ImageViewer:
    v = ImageViewer()
    qtbot.addWidget(v)
    v.resize(424, 324)
    v.show()
    qtbot.waitExposed(v)
    return v


def _wheel(widget: ImageViewer, pos: QPointF, delta: int) -> None:
    ev = QWheelEvent(pos, widget.mapToGlobal(pos), QPoint(0, 0), QPoint(0, delta),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                     Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)


def test_first_image_fits_the_view(viewer: ImageViewer) -> None:
    viewer.set_image(_image(200, 100))
    # 424 - 2*12 margin = 400 wide -> zoom 2 ; 324 - 24 = 300 high -> 3 ; min = 2
    assert viewer.zoom() == pytest.approx(2.0)
    r = viewer.image_rect_in_widget()
    assert r.center().x() == pytest.approx(212) and r.center().y() == pytest.approx(162)


def test_wheel_zooms_around_the_cursor(viewer: ImageViewer) -> None:
    viewer.set_image(_image())
    spy: list[float] = []
    viewer.zoomChanged.connect(spy.append)
    z0 = viewer.zoom()
    cursor = QPointF(100, 80)
    under = viewer.map_to_image(cursor)
    _wheel(viewer, cursor, 120)
    assert viewer.zoom() == pytest.approx(z0 * WHEEL_STEP)
    assert spy and spy[-1] == pytest.approx(viewer.zoom())
    after = viewer.map_to_image(cursor)
    assert after.x() == pytest.approx(under.x()) and after.y() == pytest.approx(under.y())
    _wheel(viewer, QPointF(300, 200), -240)
    assert viewer.zoom() == pytest.approx(z0 * WHEEL_STEP / WHEEL_STEP**2)
    assert not viewer.is_auto_fit()


def test_set_zoom_and_fit(viewer: ImageViewer, qtbot: QtBot) -> None:
    viewer.set_image(_image())
    viewer.set_zoom(5.0)
    assert viewer.zoom() == 5.0
    viewer.set_zoom(1e6)
    assert viewer.zoom() <= 64
    viewer.fit()
    assert viewer.zoom() == pytest.approx(2.0)
    viewer.set_zoom(3.0)
    qtbot.mouseDClick(viewer, Qt.MouseButton.LeftButton, pos=QPoint(200, 150))
    assert viewer.zoom() == pytest.approx(2.0)


def test_middle_button_pans(viewer: ImageViewer, qtbot: QtBot) -> None:
    viewer.set_image(_image())
    before = viewer.offset()
    qtbot.mousePress(viewer, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(viewer, QPoint(130, 90))
    qtbot.mouseRelease(viewer, Qt.MouseButton.MiddleButton, pos=QPoint(130, 90))
    assert viewer.offset() - before == QPointF(30, -10)


def test_space_drag_pans(viewer: ImageViewer, qtbot: QtBot) -> None:
    viewer.left_button_pans = False
    viewer.set_image(_image())
    before = viewer.offset()
    viewer.setFocus()
    qtbot.keyPress(viewer, Qt.Key.Key_Space)
    assert viewer.space_held()
    qtbot.mousePress(viewer, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    qtbot.mouseMove(viewer, QPoint(90, 120))
    qtbot.mouseRelease(viewer, Qt.MouseButton.LeftButton, pos=QPoint(90, 120))
    qtbot.keyRelease(viewer, Qt.Key.Key_Space)
    assert viewer.offset() - before == QPointF(-10, 20)
    assert not viewer.space_held()


def test_same_size_image_keeps_zoom_new_size_refits(viewer: ImageViewer) -> None:
    viewer.set_image(_image())
    viewer.set_zoom(4.0)
    viewer.set_image(_image())  # e.g. a live preview of the same size
    assert viewer.zoom() == 4.0
    viewer.set_image(_image(100, 100))
    assert viewer.zoom() == pytest.approx(3.0)


def test_placeholder_and_empty(viewer: ImageViewer) -> None:
    viewer.set_placeholder("Nothing yet")
    assert viewer.placeholder() == "Nothing yet"
    viewer.set_image(None)
    assert viewer.image() is None
    assert not viewer.grab().isNull()
    viewer.set_image(QImage())
    assert viewer.image() is None


def test_transparent_image_paints_checkerboard(viewer: ImageViewer) -> None:
    img = QImage(50, 50, QImage.Format.Format_RGBA8888)
    img.fill(QColor(0, 0, 0, 0))
    viewer.set_image(img)
    shot = viewer.grab().toImage()
    c = viewer.image_rect_in_widget().center().toPoint()
    colours = {shot.pixelColor(c.x() + dx, c.y()).name() for dx in range(0, 40, 4)}
    assert {"#cccccc", "#999999"} <= colours
