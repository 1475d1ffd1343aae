"""The outpaint controls: the mask canvas's extend buttons, step, reset and edge handles
(driven with pytest-qt), the prompt panel's fields kept in step, and an outpaint generated
from the window (real tiny model) at the extended size with the source's pixels kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QImage
from pytestqt.qtbot import QtBot

from sdstudio.core.request import Mode
from sdstudio.ui.canvas.mask_canvas import MaskCanvas
from sdstudio.ui.imageutil import qimage_to_pil
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_INPAINT
from sdstudio.worker import JobState

L = Qt.MouseButton.LeftButton
NO = Qt.KeyboardModifier.NoModifier
ZERO = {"left": 0, "top": 0, "right": 0, "bottom": 0}


def _canvas(qtbot: QtBot, w: int = 240, h: int = 160) -> MaskCanvas:
    c = MaskCanvas()
    qtbot.addWidget(c)
    c.resize(900, 700)
    c.show()
    qtbot.waitExposed(c)
    img = QImage(w, h, QImage.Format.Format_RGB888)
    img.fill(QColor(60, 120, 180))
    c.set_image(img)
    c.set_outpaint_target(w, h)
    return c


def _drag(qtbot: QtBot, c: MaskCanvas, side: str, x: float, y: float) -> None:
    """Drag ``side``'s edge handle to image point (x, y)."""
    view = c.viewer
    grip = view.handle_rects()[side].center().toPoint()
    target = view.map_from_image(QPointF(x, y)).toPoint()
    qtbot.mousePress(view, L, NO, grip)
    qtbot.mouseMove(view, target)
    qtbot.mouseRelease(view, L, NO, target)


def test_buttons_step_and_reset(qtbot: QtBot) -> None:
    c = _canvas(qtbot)
    bar = c.outpaint_bar
    changes: list[dict[str, int]] = []
    c.outpaintChanged.connect(lambda: changes.append(c.outpaint()))
    assert c.outpaint() == ZERO and not c.has_outpaint()
    assert not bar.reset_button.isEnabled() and bar.size_label.text() == ""
    qtbot.mouseClick(bar.buttons["left"], L)
    assert c.outpaint() == {**ZERO, "left": 64} and c.has_outpaint()
    bar.step_spin.setValue(24)
    qtbot.mouseClick(bar.buttons["bottom"], L)
    qtbot.mouseClick(bar.buttons["bottom"], L)
    assert c.outpaint() == {**ZERO, "left": 64, "bottom": 48}
    assert bar.size_label.text() == "→ 304 × 208 px"
    bar.step_spin.setValue(30)  # typed: rounded down to a multiple of 8
    bar.step_spin.editingFinished.emit()
    assert bar.step_spin.value() == 24
    assert len(changes) == 3
    # the new area is part of what "fit" shows
    rect = c.viewer.content_rect()
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == (-64, 0, 304, 208)
    assert bar.reset_button.isEnabled()
    qtbot.mouseClick(bar.reset_button, L)
    assert c.outpaint() == ZERO and len(changes) == 4
    c.set_outpaint({"top": 16})  # the panel's values: shown, not reported back
    assert c.outpaint()["top"] == 16 and len(changes) == 4


def test_drag_handles_extend_by_multiples_of_8(qtbot: QtBot) -> None:
    c = _canvas(qtbot)
    view = c.viewer
    handles = view.handle_rects()
    assert set(handles) == {"left", "top", "right", "bottom"}
    grip = handles["right"].center().toPoint()
    assert view.handle_at(QPointF(grip)) == "right"
    target = view.map_from_image(QPointF(240 + 50, 80)).toPoint()
    qtbot.mousePress(view, L, NO, grip)
    qtbot.mouseMove(view, target)
    assert c.outpaint()["right"] == 48  # 50 px rounded to a multiple of 8, during the drag
    qtbot.mouseRelease(view, L, NO, target)
    assert c.outpaint() == {**ZERO, "right": 48}
    assert not c.has_mask()  # dragging a handle paints nothing
    _drag(qtbot, c, "top", 120, -21)  # the top grip: up by 21 px
    assert c.outpaint()["top"] == 24
    _drag(qtbot, c, "right", 200, 80)  # back inside the image: 0, never negative
    assert c.outpaint() == {**ZERO, "top": 24}
    # a press inside the image still paints
    inside = view.map_from_image(QPointF(120, 80)).toPoint()
    qtbot.mousePress(view, L, NO, inside)
    qtbot.mouseRelease(view, L, NO, inside)
    assert c.has_mask()


def test_handles_count_generated_pixels_when_the_image_is_scaled(qtbot: QtBot) -> None:
    c = _canvas(qtbot)
    c.set_outpaint_target(120, 80)  # the source is fitted to half its size
    _drag(qtbot, c, "left", -50, 80)
    assert c.outpaint()["left"] == 24  # 50 image px = 25 generated px -> 24
    assert c.outpaint_rect() is not None and c.outpaint_rect().left() == -48
    assert c.outpaint_bar.size_label.text() == "→ 144 × 80 px"


def test_window_outpaint_end_to_end(qtbot: Any, make_window: Any, tiny_model: Path,
                                    tmp_path: Path) -> None:
    w = make_window(model=str(tiny_model))
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    src = tmp_path / "outpaint-source.png"
    Image.fromarray(source).save(src)
    w.tabs.setCurrentIndex(TAB_INPAINT)
    panel = w.prompt_panel
    for name in ("masked_content", "outpaint_left", "outpaint_top"):
        assert panel.widget(name).isVisible(), name
    assert w.mask_canvas.load_file(str(src))
    p = panel
    p.prompt_edit.setPlainText("more of it")
    p.set_size(64, 64)
    p.widget("steps").setValue(2)
    p.widget("seed").setText("1234")
    p.widget("mask_blur").setValue(0)
    p.widget("masked_content").setCurrentText("fill")
    bar = w.mask_canvas.outpaint_bar
    bar.step_spin.setValue(16)
    qtbot.mouseClick(bar.buttons["right"], L)  # the canvas sets the panel's field
    assert panel.control("outpaint_right").value() == 16
    panel.widget("outpaint_top").setValue(8)  # and the panel's field shows on the canvas
    assert w.mask_canvas.outpaint() == {**ZERO, "right": 16, "top": 8}
    request = w.build_request()
    assert request.mode is Mode.INPAINT and request.mask is None  # no painted mask needed
    assert (request.outpaint_right, request.outpaint_top) == (16, 8)
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=120_000)
    assert w.generate() is not None
    qtbot.waitUntil(lambda: all(j.state.finished for j in w.queue.jobs()), timeout=60_000)
    (job,) = w.queue.jobs()
    assert job.state is JobState.DONE, job.failure
    result = np.array(Image.open(job.images[0]).convert("RGB"))
    assert result.shape == (72, 80, 3)
    assert np.array_equal(result[8:, :64], source)  # blur 0: the source exactly
    assert w.inpaint_result.image() is not None
    assert w.inpaint_result.image().size().toTuple() == (80, 72)
    w.inpaint_result.set_compare(True)  # Compare: the source where it was, on the canvas
    before = w.inpaint_result.before_image()
    assert before is not None and before.size().toTuple() == (80, 72)
    shown = np.asarray(qimage_to_pil(before).convert("RGB"))
    assert np.array_equal(shown[8:, :64], source) and not shown[:8].any()
    w.inpaint_result.set_compare(False)
    # another tab's request carries no outpaint
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.source_canvas.load_file(str(src))
    other = w.build_request()
    assert other.mode is Mode.IMG2IMG and other.outpaint_right == 0
    # reset from the canvas clears the panel
    w.tabs.setCurrentIndex(TAB_INPAINT)
    qtbot.mouseClick(bar.reset_button, L)
    assert panel.control("outpaint_right").value() == 0
    assert panel.control("outpaint_top").value() == 0
