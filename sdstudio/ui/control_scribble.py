"""Painting a scribble for a control unit: white lines on black, used as the control image as
it is (preprocessor "none", a scribble ControlNet).

:class:`ScribbleCanvas` is the inpaint mask canvas (:class:`~sdstudio.ui.canvas.mask_canvas.
MaskCanvas`: the same brush, eraser, size, hardness, undo and redo, pen pressure) over a black
image, the painted "mask" shown opaque white: what is painted is the scribble. The mask
canvas's file, blur and outpaint tools are hidden. :class:`ScribbleDialog` holds it, with
"Use scribble" and "Cancel".
"""

from __future__ import annotations

from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLayout,
    QVBoxLayout,
    QWidget,
)

from sdstudio.ui.canvas.mask_canvas import MaskCanvas
from sdstudio.ui.canvas.mask_paint import MaskOverlay
from sdstudio.ui.imageutil import qimage_to_array

SCRIBBLE_BRUSH = 8  # px: a pen line at 512 px
MAX_SCRIBBLE_SIDE = 2048


class ScribbleCanvas(MaskCanvas):
    """A black canvas of the generation's size to paint white lines on."""

    def __init__(self, width: int, height: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._overlay = MaskOverlay((255, 255, 255), 1.0)
        self._view.setAccessibleName("Scribble")
        self.toolbar.brush_button.setToolTip("Brush: paint white lines (B)\n"
                                             "Right button erases")
        self.toolbar.clear_button.setToolTip("Clear the scribble")
        bar = self.toolbar
        # the wrapped tool rows group their widgets in boxes: hide the groups of tools a
        # scribble has no use for (image files, mask files, blur preview), and Fill
        for widget in (bar.open_button, bar.load_mask_button, bar.blur_spin):
            box = widget.parentWidget()
            (box if box is not None and box is not self else widget).hide()
        bar.fill_button.hide()
        # the outpaint row (the canvas layout's fourth item): no outpainting a scribble
        layout = self.layout()
        outpaint = layout.itemAt(3) if layout is not None else None
        flow = outpaint.layout() if outpaint is not None else None
        if isinstance(flow, QLayout):
            for i in range(flow.count()):
                item = flow.itemAt(i)
                shown = item.widget() if item is not None else None
                if shown is not None:
                    shown.hide()
        self.set_hardness(1.0)
        self.set_brush_size(SCRIBBLE_BRUSH)
        self.new_scribble(width, height)

    def new_scribble(self, width: int, height: int) -> None:
        """An empty black canvas of ``width`` x ``height`` (at most 2048 per side)."""
        w = max(8, min(MAX_SCRIBBLE_SIDE, int(width)))
        h = max(8, min(MAX_SCRIBBLE_SIDE, int(height)))
        black = QImage(w, h, QImage.Format.Format_RGB888)
        black.fill(QColor(0, 0, 0))
        self.set_image(black)

    def set_scribble(self, scribble: QImage) -> None:
        """Go on painting ``scribble`` (a white-on-black image): its light pixels are the
        lines (one undo step)."""
        self.new_scribble(scribble.width(), scribble.height())
        grey = scribble.convertToFormat(QImage.Format.Format_Grayscale8)
        self._replace(qimage_to_array(grey))

    def scribble(self) -> QImage | None:
        """The painted lines as an RGB image, white on black; None when nothing is painted."""
        if not self.has_mask():
            return None
        mask = self.mask_image()
        assert mask is not None
        return mask.convertToFormat(QImage.Format.Format_RGB888)

    def outpaint_rect(self) -> QRectF | None:
        return None  # no outpaint handles or area on a scribble


class ScribbleDialog(QDialog):
    """Paint a scribble; ``scribble()`` after it is accepted."""

    def __init__(self, width: int, height: int, existing: QImage | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Paint a scribble")
        self.canvas = ScribbleCanvas(width, height, self)
        if existing is not None and not existing.isNull():
            self.canvas.set_scribble(existing)
        hint = QLabel("Paint white lines on black: they guide the composition as they are "
                      "(preprocessor none, with a scribble ControlNet). The right button "
                      "erases.", self)
        hint.setWordWrap(True)
        buttons = QDialogButtonBox(self)
        self.use_button = buttons.addButton("Use scribble",
                                            QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(hint)
        lay.addWidget(self.canvas, 1)
        lay.addWidget(buttons)
        self.resize(720, 680)

    def scribble(self) -> QImage | None:
        return self.canvas.scribble()

