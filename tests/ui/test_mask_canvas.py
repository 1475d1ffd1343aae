"""MaskCanvas driven by synthesised mouse, tablet and key events, checked against the mask."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import (
    QColor,
    QImage,
    QInputDevice,
    QPointingDevice,
    QTabletEvent,
)
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from sdstudio.ui.canvas.mask_canvas import MaskCanvas
from sdstudio.ui.imageutil import array_to_qimage, qimage_to_array
from tests.ui.helpers import send_drag_and_drop

W, H = 240, 160
L = Qt.MouseButton.LeftButton
R = Qt.MouseButton.RightButton
NO = Qt.KeyboardModifier.NoModifier
CTRL = Qt.KeyboardModifier.ControlModifier


def _image(w: int = W, h: int = H) -> QImage:
    img = QImage(w, h, QImage.Format.Format_RGB888)
    img.fill(QColor(60, 120, 180))
    return img


@pytest.fixture
def canvas(qtbot: QtBot) -> MaskCanvas:
    c = MaskCanvas()
    qtbot.addWidget(c)
    c.resize(900, 700)
    c.show()
    qtbot.waitExposed(c)
    c.set_image(_image())
    c.set_hardness(1.0)
    c.set_brush_size(20)
    return c


def _at(c: MaskCanvas, x: float, y: float) -> QPoint:
    """Widget point over image point (x, y)."""
    return c.viewer.map_from_image(QPointF(x, y)).toPoint()


def _img_point(c: MaskCanvas, wp: QPoint) -> tuple[float, float]:
    p = c.viewer.map_to_image(QPointF(wp))
    return p.x(), p.y()


def _stroke(qtbot: QtBot, c: MaskCanvas, pts: list[tuple[float, float]],
            button: Qt.MouseButton = L) -> list[tuple[float, float]]:
    """Press at the first point, move through the others, release at the last; returns the
    image points actually hit (after rounding to widget pixels)."""
    v = c.viewer
    wps = [_at(c, x, y) for x, y in pts]
    qtbot.mousePress(v, button, NO, wps[0])
    for wp in wps[1:]:
        qtbot.mouseMove(v, wp)
    qtbot.mouseRelease(v, button, NO, wps[-1])
    return [_img_point(c, wp) for wp in wps]


def _capsule_dist(shape: tuple[int, int], pts: list[tuple[float, float]]) -> np.ndarray:
    """Distance of each pixel centre to the polyline through pts."""
    h, w = shape
    py, px = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    best = np.full(shape, np.inf)
    segs = list(itertools.pairwise(pts)) or [(pts[0], pts[0])]
    for (x0, y0), (x1, y1) in segs:
        dx, dy = x1 - x0, y1 - y0
        l2 = dx * dx + dy * dy
        t = np.zeros(shape) if l2 == 0 else np.clip(((px - x0) * dx + (py - y0) * dy) / l2, 0, 1)
        d = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))
        best = np.minimum(best, d)
    return best


def _mask(c: MaskCanvas) -> np.ndarray:
    m = c.mask_image()
    assert m is not None
    return qimage_to_array(m)


# ------------------------------------------------------------------------------ painting
@pytest.mark.parametrize("zoom", [1.0, 2.5, 0.75])
def test_stroke_covers_the_brush_area_at_any_zoom(canvas: MaskCanvas, qtbot: QtBot,
                                                  zoom: float) -> None:
    canvas.viewer.set_zoom(zoom)
    hit = _stroke(qtbot, canvas, [(60, 60), (120, 70), (160, 100)])
    m = _mask(canvas)
    assert m.shape == (H, W)
    d = _capsule_dist(m.shape, hit)
    r = 10.0
    assert (m[d <= r - 1.0] == 255).all(), "pixels inside the brush must be painted"
    assert (m[d >= r + 1.0] == 0).all(), "pixels beyond the brush radius must stay clear"
    cx, cy = hit[0]
    assert m[int(cy), int(cx)] == 255
    assert m[int(cy), int(cx + r + 3)] == 0 or d[int(cy), int(cx + r + 3)] < r + 1


def test_mask_has_exactly_the_image_size_at_other_zoom(canvas: MaskCanvas,
                                                       qtbot: QtBot) -> None:
    canvas.set_image(_image(301, 199))
    canvas.viewer.set_zoom(3.3)
    _stroke(qtbot, canvas, [(150, 100), (152, 101)])
    m = canvas.mask_image()
    assert m is not None
    assert (m.width(), m.height()) == (301, 199)
    assert m.format() == QImage.Format.Format_Grayscale8
    assert canvas.has_mask()


def test_fast_move_leaves_no_gap(canvas: MaskCanvas, qtbot: QtBot) -> None:
    v = canvas.viewer
    a, b = _at(canvas, 15, 80), _at(canvas, 225, 80)
    qtbot.mousePress(v, L, NO, a)
    qtbot.mouseMove(v, b)  # one big jump, no events in between
    m = _mask(canvas)  # checked before the release: the move itself painted the segment
    y = round(_img_point(canvas, a)[1])
    xa, xb = _img_point(canvas, a)[0], _img_point(canvas, b)[0]
    assert (m[y, int(xa) + 1: int(xb)] == 255).all()
    qtbot.mouseRelease(v, L, NO, b)
    assert canvas.can_undo()


def test_brush_size_is_in_image_pixels(canvas: MaskCanvas, qtbot: QtBot) -> None:
    canvas.viewer.set_zoom(4.0)
    canvas.viewer.pan_by(0, 0)
    canvas.set_brush_size(10)
    (cx, cy), = _stroke(qtbot, canvas, [(60, 60)])
    m = _mask(canvas)
    d = _capsule_dist(m.shape, [(cx, cy)])
    assert (m[d <= 4] == 255).all() and (m[d >= 6] == 0).all()
    assert 60 < int((m > 127).sum()) < 100  # about pi * 5^2 = 78.5 pixels


def test_soft_brush_falls_off(canvas: MaskCanvas, qtbot: QtBot) -> None:
    canvas.set_hardness(0.0)
    canvas.set_brush_size(40)
    (cx, cy), = _stroke(qtbot, canvas, [(100, 80)])
    m = _mask(canvas)
    d = _capsule_dist(m.shape, [(cx, cy)])
    assert m[d < 1].min() >= 250
    mid = m[(d > 9) & (d < 11)]
    assert 40 < mid.mean() < 220
    assert (m[d > 21] == 0).all()


def test_right_button_erases_with_eraser_off(canvas: MaskCanvas, qtbot: QtBot) -> None:
    canvas.fill()
    assert not canvas.eraser()
    hit = _stroke(qtbot, canvas, [(100, 80), (140, 80)], button=R)
    m = _mask(canvas)
    d = _capsule_dist(m.shape, hit)
    assert (m[d <= 9] == 0).all() and (m[d >= 11] == 255).all()
    assert not canvas.eraser()


def test_e_toggles_eraser(canvas: MaskCanvas, qtbot: QtBot) -> None:
    _stroke(qtbot, canvas, [(50, 50), (150, 50)])
    canvas.viewer.setFocus()
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_E)
    assert canvas.eraser() and canvas.toolbar.eraser_button.isChecked()
    hit = _stroke(qtbot, canvas, [(100, 40), (100, 60)])
    m = _mask(canvas)
    assert m[50, 100] == 0 and m[50, 60] == 255
    d = _capsule_dist(m.shape, hit)
    assert (m[d <= 9] == 0).all()
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_E)
    assert not canvas.eraser() and canvas.toolbar.brush_button.isChecked()


def test_bracket_keys_change_brush_size(canvas: MaskCanvas, qtbot: QtBot) -> None:
    canvas.viewer.setFocus()
    size = canvas.brush_size()
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_BracketRight)
    assert canvas.brush_size() > size
    bigger = canvas.brush_size()
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_BracketLeft)
    assert canvas.brush_size() < bigger and canvas.brush_size() < size
    assert canvas.toolbar.size_spin.value() == canvas.brush_size()
    canvas.set_brush_size(1)
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_BracketLeft)
    assert canvas.brush_size() == 1
    qtbot.keyClick(canvas.viewer, Qt.Key.Key_BracketRight)
    assert canvas.brush_size() == 2


def test_size_slider_and_spin(canvas: MaskCanvas) -> None:
    canvas.toolbar.size_spin.setValue(64)
    assert canvas.brush_size() == 64
    canvas.toolbar.size_slider.setValue(canvas.toolbar.size_slider.maximum())
    assert canvas.brush_size() == 1024
    canvas.toolbar.hardness_slider.setValue(30)
    assert canvas.hardness() == pytest.approx(0.3)


def test_pan_buttons_do_not_paint(canvas: MaskCanvas, qtbot: QtBot) -> None:
    v = canvas.viewer
    before = v.offset()
    qtbot.mousePress(v, Qt.MouseButton.MiddleButton, NO, _at(canvas, 100, 80))
    qtbot.mouseMove(v, _at(canvas, 100, 80) + QPoint(40, 0))
    qtbot.mouseRelease(v, Qt.MouseButton.MiddleButton, NO, _at(canvas, 100, 80))
    assert v.offset() != before
    v.setFocus()
    qtbot.keyPress(v, Qt.Key.Key_Space)
    _stroke(qtbot, canvas, [(100, 80), (120, 90)])
    qtbot.keyRelease(v, Qt.Key.Key_Space)
    assert not canvas.has_mask()
    assert not canvas.can_undo()


# ------------------------------------------------------------------------------ undo
def test_undo_redo_across_55_strokes(canvas: MaskCanvas, qtbot: QtBot) -> None:
    canvas.set_brush_size(6)
    snapshots = [_mask(canvas)]
    for i in range(55):
        _stroke(qtbot, canvas, [(10 + (i % 11) * 20, 10 + (i // 11) * 30),
                                (14 + (i % 11) * 20, 12 + (i // 11) * 30)])
        snapshots.append(_mask(canvas))
    assert canvas.model.undo_count() == 55
    # undo at least 50 strokes, each restoring the exact earlier mask
    undone = 0
    while canvas.can_undo():
        canvas.undo()
        undone += 1
        np.testing.assert_array_equal(_mask(canvas), snapshots[55 - undone])
    assert undone >= 50
    while canvas.can_redo():
        canvas.redo()
    np.testing.assert_array_equal(_mask(canvas), snapshots[-1])


def test_undo_redo_keys(canvas: MaskCanvas, qtbot: QtBot) -> None:
    _stroke(qtbot, canvas, [(50, 50)])
    painted = _mask(canvas)
    v = canvas.viewer
    v.setFocus()
    qtbot.keyClick(v, Qt.Key.Key_Z, CTRL)
    assert not canvas.has_mask() and canvas.can_redo()
    qtbot.keyClick(v, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(_mask(canvas), painted)
    qtbot.keyClick(v, Qt.Key.Key_Z, CTRL)
    qtbot.keyClick(v, Qt.Key.Key_Y, CTRL)
    np.testing.assert_array_equal(_mask(canvas), painted)
    tools = canvas.toolbar
    assert tools.undo_button.isEnabled() and not tools.redo_button.isEnabled()


def test_new_stroke_clears_redo(canvas: MaskCanvas, qtbot: QtBot) -> None:
    _stroke(qtbot, canvas, [(50, 50)])
    canvas.undo()
    assert canvas.can_redo()
    _stroke(qtbot, canvas, [(150, 50)])
    assert not canvas.can_redo()


def test_clear_fill_invert_are_undoable_steps(canvas: MaskCanvas, qtbot: QtBot) -> None:
    _stroke(qtbot, canvas, [(60, 60), (90, 60)])
    stroke = _mask(canvas)
    canvas.invert()
    np.testing.assert_array_equal(_mask(canvas), 255 - stroke)
    canvas.fill()
    assert (_mask(canvas) == 255).all()
    canvas.clear()
    assert not canvas.has_mask()
    canvas.undo()
    assert (_mask(canvas) == 255).all()
    canvas.undo()
    np.testing.assert_array_equal(_mask(canvas), 255 - stroke)
    canvas.undo()
    np.testing.assert_array_equal(_mask(canvas), stroke)
    canvas.undo()
    assert not canvas.has_mask() and not canvas.can_undo()


def test_buttons(canvas: MaskCanvas, qtbot: QtBot) -> None:
    qtbot.mouseClick(canvas.toolbar.fill_button, L)
    assert (_mask(canvas) == 255).all()
    qtbot.mouseClick(canvas.toolbar.invert_button, L)
    assert not canvas.has_mask()
    qtbot.mouseClick(canvas.toolbar.undo_button, L)
    assert canvas.has_mask()
    qtbot.mouseClick(canvas.toolbar.clear_button, L)
    assert not canvas.has_mask()
    qtbot.mouseClick(canvas.toolbar.eraser_button, L)
    assert canvas.eraser()
    tools = canvas.toolbar
    for b in (tools.undo_button, tools.redo_button, tools.clear_button, tools.fill_button,
              tools.invert_button, tools.eraser_button, tools.brush_button,
              tools.load_mask_button, tools.save_mask_button, tools.open_button,
              tools.paste_button):
        assert b.toolTip() and not b.icon().isNull()


# ------------------------------------------------------------------------------ mask I/O
def test_signals(canvas: MaskCanvas, qtbot: QtBot) -> None:
    with qtbot.waitSignal(canvas.maskChanged, timeout=1000):
        _stroke(qtbot, canvas, [(50, 50)])
    with qtbot.waitSignals([canvas.imageChanged, canvas.maskChanged], timeout=1000):
        canvas.set_image(_image(64, 32))
    assert not canvas.has_mask() and not canvas.can_undo()
    m = canvas.mask_image()
    assert m is not None and (m.width(), m.height()) == (64, 32)


def test_save_and_load_mask_round_trip(canvas: MaskCanvas, qtbot: QtBot,
                                       tmp_path: Path) -> None:
    canvas.set_hardness(0.3)
    _stroke(qtbot, canvas, [(40, 40), (200, 120)])
    painted = _mask(canvas)
    path = tmp_path / "mask.png"
    canvas.save_mask(str(path))
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im), painted)
    canvas.clear()
    assert canvas.load_mask(str(path))
    np.testing.assert_array_equal(_mask(canvas), painted)
    canvas.undo()
    assert not canvas.has_mask()


def test_load_mask_from_alpha_and_scaled(canvas: MaskCanvas, tmp_path: Path) -> None:
    alpha = np.zeros((H * 2, W * 2), dtype=np.uint8)
    alpha[:, : W] = 255
    rgba = np.dstack([np.zeros_like(alpha)] * 3 + [alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert canvas.load_mask(str(tmp_path / "a.png"))
    m = _mask(canvas)
    assert m.shape == (H, W)
    assert (m[:, : W // 2 - 1] == 255).all() and (m[:, W // 2 + 1:] == 0).all()


def test_mask_size_mismatch_is_refused(canvas: MaskCanvas, qtbot: QtBot,
                                       tmp_path: Path) -> None:
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000) as blocker:
        canvas.set_mask(array_to_qimage(np.full((10, 10), 255, np.uint8)))
    assert "same size" in blocker.args[0]
    assert not canvas.has_mask()
    Image.new("L", (100, 100), 255).save(tmp_path / "square.png")
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000):
        assert not canvas.load_mask(str(tmp_path / "square.png"))
    assert not canvas.has_mask()
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with qtbot.waitSignal(canvas.errorOccurred, timeout=1000):
        assert not canvas.load_mask(str(tmp_path / "junk.png"))


def test_set_mask(canvas: MaskCanvas) -> None:
    arr = np.zeros((H, W), np.uint8)
    arr[10:20, 30:40] = 200
    canvas.set_mask(array_to_qimage(arr))
    np.testing.assert_array_equal(_mask(canvas), arr)
    assert canvas.masked_bbox() == (30, 10, 40, 20)
    canvas.undo()
    assert not canvas.has_mask()


def test_blur_preview_changes_the_view_not_the_mask(canvas: MaskCanvas,
                                                    qtbot: QtBot) -> None:
    canvas.set_brush_size(30)
    _stroke(qtbot, canvas, [(120, 80)])
    m = _mask(canvas)
    v = canvas.viewer
    edge = _at(canvas, 120 + 17, 80)
    sharp = v.grab().toImage().pixelColor(edge)
    canvas.set_blur_preview(8)
    assert canvas.toolbar.blur_spin.value() == 8
    blurred = v.grab().toImage().pixelColor(edge)
    assert sharp != blurred
    np.testing.assert_array_equal(_mask(canvas), m)
    canvas.set_blur_preview(0)
    assert v.grab().toImage().pixelColor(edge) == sharp


def test_tablet_pressure_scales_the_brush(canvas: MaskCanvas) -> None:
    v = canvas.viewer
    dev = QPointingDevice("test pen", 4711, QInputDevice.DeviceType.Stylus,
                          QPointingDevice.PointerType.Pen,
                          QInputDevice.Capability.Position | QInputDevice.Capability.Pressure,
                          1, 3)
    canvas.set_brush_size(40)

    def send(kind: QEvent.Type, x: float, y: float, pressure: float) -> None:
        pos = QPointF(_at(canvas, x, y))
        ev = QTabletEvent(kind, dev, pos, QPointF(v.mapToGlobal(pos)), pressure, 0.0, 0.0, 0.0,
                          0.0, 0.0, NO, L, L if kind != QEvent.Type.TabletRelease else
                          Qt.MouseButton.NoButton)
        QApplication.sendEvent(v, ev)
        assert ev.isAccepted()

    send(QEvent.Type.TabletPress, 120, 80, 0.5)
    send(QEvent.Type.TabletRelease, 120, 80, 0.5)
    cx, cy = _img_point(canvas, _at(canvas, 120, 80))
    m = _mask(canvas)
    d = _capsule_dist(m.shape, [(cx, cy)])
    assert (m[d <= 9] == 255).all() and (m[d >= 11] == 0).all()  # radius 20 * 0.5
    assert canvas.can_undo()


def test_drop_image_on_mask_canvas_resets_mask(canvas: MaskCanvas, qtbot: QtBot,
                                              tmp_path: Path) -> None:
    _stroke(qtbot, canvas, [(50, 50)])
    p = tmp_path / "other.png"
    Image.new("RGB", (80, 40), (5, 5, 5)).save(p)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p))])
    with qtbot.waitSignal(canvas.imageChanged, timeout=1000):
        send_drag_and_drop(canvas, mime, QPoint(100, 100))
    img = canvas.image()
    assert img is not None and (img.width(), img.height()) == (80, 40)
    assert not canvas.has_mask()
    assert _mask(canvas).shape == (40, 80)


def test_nothing_happens_without_image(qtbot: QtBot) -> None:
    c = MaskCanvas()
    qtbot.addWidget(c)
    c.resize(400, 300)
    c.show()
    qtbot.mousePress(c.viewer, L, NO, QPoint(100, 100))
    qtbot.mouseRelease(c.viewer, L, NO, QPoint(100, 100))
    c.fill()
    c.invert()
    c.undo()
    assert c.mask_image() is None and not c.has_mask() and not c.can_undo()
