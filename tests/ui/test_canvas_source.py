"""SourceCanvas: drop, paste, open errors and fit modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QRectF, Qt, QUrl
from PySide6.QtGui import QColor, QDropEvent, QGuiApplication, QImage
from pytestqt.qtbot import QtBot

from sdstudio.core.request import RESIZE_MODES
from sdstudio.ui.canvas.source_canvas import SourceCanvas, fit_frame
from sdstudio.ui.imageutil import qimage_to_pil
from tests.ui.helpers import send_drag_and_drop


@pytest.fixture
def canvas(qtbot: QtBot) -> SourceCanvas:
    c = SourceCanvas()
    qtbot.addWidget(c)
    c.resize(640, 480)
    c.show()
    qtbot.waitExposed(c)
    return c


@pytest.fixture
def png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    arr = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    p = tmp_path / "source image.png"
    Image.fromarray(arr).save(p)
    return p, arr


def _drop(widget: SourceCanvas, mime: QMimeData) -> QDropEvent:
    enter, drop = send_drag_and_drop(widget, mime)
    assert enter.isAccepted()
    return drop


def test_drop_a_png_file(canvas: SourceCanvas, qtbot: QtBot,
                         png: tuple[Path, np.ndarray]) -> None:
    path, arr = png
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    with qtbot.waitSignal(canvas.imageChanged, timeout=1000):
        drop = _drop(canvas, mime)
    assert drop.isAccepted()
    img = canvas.image()
    assert img is not None
    np.testing.assert_array_equal(np.asarray(qimage_to_pil(img).convert("RGB")), arr)


def test_drop_image_data(canvas: SourceCanvas) -> None:
    q = QImage(30, 20, QImage.Format.Format_RGB32)
    q.fill(QColor(1, 2, 3))
    mime = QMimeData()
    mime.setImageData(q)
    _drop(canvas, mime)
    img = canvas.image()
    assert img is not None and img.size() == q.size()
    assert img.pixelColor(5, 5) == QColor(1, 2, 3)


def test_drop_non_image_reports_error_and_keeps_image(canvas: SourceCanvas, qtbot: QtBot,
                                                      tmp_path: Path) -> None:
    keep = QImage(8, 8, QImage.Format.Format_RGB888)
    keep.fill(QColor(9, 9, 9))
    canvas.set_image(keep)
    bad = tmp_path / "readme.png"
    bad.write_text("hello")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(bad))])
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000) as blocker:
        drop = _drop(canvas, mime)
    assert not drop.isAccepted()
    assert "readme.png" in blocker.args[0] and "\n" not in blocker.args[0]
    assert canvas.image() is not None and canvas.image().size() == keep.size()


def test_drag_enter_refuses_plain_text(canvas: SourceCanvas) -> None:
    mime = QMimeData()
    mime.setText("just words")
    enter, _ = send_drag_and_drop(canvas, mime, QPoint(10, 10))
    assert not enter.isAccepted()


def test_remote_url_is_refused(canvas: SourceCanvas, qtbot: QtBot) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl("https://example.com/cat.png")])
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000) as blocker:
        assert not canvas.load_mime(mime)
    assert "local" in blocker.args[0]


def test_paste_with_ctrl_v(canvas: SourceCanvas, qtbot: QtBot) -> None:
    q = QImage(16, 12, QImage.Format.Format_RGB888)
    q.fill(QColor(200, 100, 50))
    QGuiApplication.clipboard().setImage(q)
    canvas.viewer.setFocus()
    with qtbot.waitSignal(canvas.imageChanged, timeout=1000):
        qtbot.keyClick(canvas.viewer, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    img = canvas.image()
    assert img is not None and img.size() == q.size()
    assert img.pixelColor(3, 3) == QColor(200, 100, 50)


def test_paste_a_copied_file(canvas: SourceCanvas, png: tuple[Path, np.ndarray]) -> None:
    path, arr = png
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    QGuiApplication.clipboard().setMimeData(mime)
    assert canvas.paste()
    assert canvas.image() is not None and canvas.image().width() == arr.shape[1]


def test_load_file_errors(canvas: SourceCanvas, qtbot: QtBot, tmp_path: Path) -> None:
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000) as blocker:
        assert not canvas.load_file(str(tmp_path / "missing.png"))
    assert "missing.png" in blocker.args[0]
    assert canvas.image() is None


def test_fit_modes_and_combo(canvas: SourceCanvas, png: tuple[Path, np.ndarray]) -> None:
    assert canvas.fit_mode() == "resize"
    assert canvas.load_file(str(png[0]))
    canvas.set_target_size(512, 512)
    for mode in RESIZE_MODES:
        canvas.set_fit_mode(mode)
        assert canvas.fit_mode() == mode
        assert canvas.fit_combo.currentData() == mode
        canvas.grab()  # paints the frame without error
    canvas.fit_combo.setCurrentIndex(canvas.fit_combo.findData("crop"))
    assert canvas.fit_mode() == "crop"
    with pytest.raises(ValueError):
        canvas.set_fit_mode("stretch")
    # the 64x48 image, 512x512 target: crop keeps a centred 48x48 square
    assert canvas.target_frame() == QRectF(8, 0, 48, 48)


def test_fit_frame_geometry() -> None:
    assert fit_frame("resize", 640, 480, 512, 768) == QRectF(0, 0, 640, 480)
    # crop: cover 512x768 -> scale 1.6 by height; keep 320x480 centred
    assert fit_frame("crop", 640, 480, 512, 768) == QRectF(160, 0, 320, 480)
    # fill: fit inside -> scale 0.8 by width; frame 640x960 centred around the image
    assert fit_frame("fill", 640, 480, 512, 768) == QRectF(0, -240, 640, 960)
    assert fit_frame("crop", 100, 100, 100, 100) == QRectF(0, 0, 100, 100)


def test_fill_frame_is_visible_after_fit(canvas: SourceCanvas,
                                         png: tuple[Path, np.ndarray]) -> None:
    canvas.load_file(str(png[0]))
    canvas.set_target_size(512, 1024)
    canvas.set_fit_mode("fill")
    frame = canvas.target_frame()
    assert frame is not None
    v = canvas.viewer
    top = v.map_from_image(frame.topLeft())
    bottom = v.map_from_image(frame.bottomRight())
    assert top.y() >= 0 and bottom.y() <= v.height()


def test_clear_button(canvas: SourceCanvas, qtbot: QtBot, png: tuple[Path, np.ndarray]) -> None:
    assert not canvas.clear_button.isEnabled()
    canvas.load_file(str(png[0]))
    assert canvas.clear_button.isEnabled()
    with qtbot.waitSignal(canvas.imageChanged, timeout=1000):
        qtbot.mouseClick(canvas.clear_button, Qt.MouseButton.LeftButton)
    assert canvas.image() is None
