"""The mask canvas's outpaint row: extend a side by a step, the step, reset, the new size.

The sides are the request's ``outpaint_*`` fields (pixels of the generated image, multiples
of 8). The prompt panel holds them; the canvas shows them around the image and reports the
changes its buttons and edge handles make (``MaskCanvas.outpaintChanged``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QToolButton

from sdstudio.core.outpaint import SIDES, STEP, extended_size, outpaints, sides_of

if TYPE_CHECKING:
    from sdstudio.ui.canvas.mask_canvas import MaskCanvas

DEFAULT_STEP = 64
_ARROWS = {"left": "◀", "top": "▲", "right": "▶", "bottom": "▼"}


def outpaint_canvas(fitted: QImage, request: Any) -> QImage:
    """The source fitted to the request's size, placed on its outpainted canvas (black, as
    the engine starts the new area): the "before" of an outpaint result."""
    if not outpaints(request):
        return fitted
    sides = sides_of(request)
    width, height = extended_size(request)
    canvas = QImage(width, height, QImage.Format.Format_RGB32)
    canvas.fill(Qt.GlobalColor.black)
    painter = QPainter(canvas)
    painter.drawImage(sides["left"], sides["top"], fitted)
    painter.end()
    return canvas


class OutpaintBar:
    """Builds the row (``row``, for the canvas to place) and keeps it in step."""

    def __init__(self, canvas: MaskCanvas) -> None:
        self._canvas = canvas
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        title = QLabel("Outpaint", canvas)
        title.setToolTip("Extend the image beyond its borders: the new area is generated "
                         "(drag the handles on the canvas edges, too)")
        row.addWidget(title)
        row.addSpacing(4)
        self.buttons: dict[str, QToolButton] = {}
        for side in SIDES:
            button = QToolButton(canvas)
            button.setText(_ARROWS[side])
            button.setToolTip(f"Extend the {side} side by the step")
            button.setAccessibleName(f"Extend {side}")
            button.clicked.connect(lambda _=False, s=side: canvas.extend_side(s))
            self.buttons[side] = button
            row.addWidget(button)
        row.addSpacing(6)
        step_label = QLabel("by", canvas)
        self.step_spin = QSpinBox(canvas)
        self.step_spin.setRange(STEP, 1024)
        self.step_spin.setSingleStep(STEP * 4)
        self.step_spin.setValue(DEFAULT_STEP)
        self.step_spin.setSuffix(" px")
        self.step_spin.setToolTip("How far one click extends a side (a multiple of 8)")
        self.step_spin.setAccessibleName("Outpaint step")
        self.step_spin.editingFinished.connect(self._round_step)
        step_label.setBuddy(self.step_spin)
        row.addWidget(step_label)
        row.addWidget(self.step_spin)
        self.reset_button = QToolButton(canvas)
        self.reset_button.setText("Reset")
        self.reset_button.setToolTip("No outpaint: back to the image's own borders")
        self.reset_button.clicked.connect(canvas.reset_outpaint)
        row.addWidget(self.reset_button)
        row.addSpacing(8)
        self.size_label = QLabel("", canvas)
        self.size_label.setAccessibleName("Outpainted size")
        row.addWidget(self.size_label)
        row.addStretch(1)
        self.row = row

    def step(self) -> int:
        return int(self.step_spin.value()) // STEP * STEP

    def _round_step(self) -> None:
        self.step_spin.setValue(max(STEP, self.step()))

    def sync(self) -> None:
        canvas = self._canvas
        has = canvas.image() is not None
        for button in self.buttons.values():
            button.setEnabled(has)
        sides = canvas.outpaint()
        self.reset_button.setEnabled(has and any(sides.values()))
        target = canvas.outpaint_target()
        if has and any(sides.values()) and target is not None:
            width = target[0] + sides["left"] + sides["right"]
            height = target[1] + sides["top"] + sides["bottom"]
            self.size_label.setText(f"→ {width} × {height} px")
        else:
            self.size_label.setText("")
