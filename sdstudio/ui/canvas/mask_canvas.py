"""MaskCanvas: paint the inpaint mask over the source image.

The mask lives in a :class:`~sdstudio.ui.canvas.mask_model.MaskModel` (a uint8 array the size
of the image). Each mouse or tablet move paints one capsule segment into it, in image
coordinates, and only the changed box of the translucent overlay is recoloured and repainted;
the image itself is never recomposed during a stroke.

Outpaint: the row under the tools (:mod:`.outpaint_bar`) and the grips on the canvas edges
extend the canvas by multiples of 8 generated pixels; the prompt panel's outpaint fields hold
the sides (the window keeps both in step).

Around it: :mod:`.mask_view` (the viewer: overlay, brush cursor, pointer input),
:mod:`.mask_toolbar` (the tool rows), :mod:`.mask_paint` (brush, overlay colours and mask
files, without Qt) and :mod:`.mask_model` (the mask and its undo history, without Qt).

Mouse: left paints (erases with the eraser on), right always erases, middle button or
space+drag pans, the wheel zooms around the cursor, double-click with the middle button fits.
Keys (while the canvas has focus): ``[`` / ``]`` brush size, ``E`` eraser, ``B`` brush,
Ctrl+Z undo, Ctrl+Shift+Z or Ctrl+Y redo, Ctrl+I invert, Ctrl+V paste an image, Ctrl+O open,
``0`` fit, ``1`` actual size, ``+`` / ``-`` zoom.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import QVBoxLayout, QWidget

from sdstudio.core.errors import ImageInputError
from sdstudio.core.outpaint import SIDES, STEP
from sdstudio.ui import file_dialogs
from sdstudio.ui.canvas.base import ImageCanvasBase
from sdstudio.ui.canvas.mask_model import BBox, MaskModel
from sdstudio.ui.canvas.mask_paint import (
    MAX_BLUR_PREVIEW,
    MaskBrush,
    MaskOverlay,
    expand,
    mask_from_image,
    write_mask_png,
)
from sdstudio.ui.canvas.mask_toolbar import MaskToolbar
from sdstudio.ui.canvas.mask_view import MaskView
from sdstudio.ui.canvas.outpaint_bar import OutpaintBar
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.flow_layout import wrap_row
from sdstudio.ui.imageutil import array_to_qimage, open_image_safely, qimage_to_array


class MaskCanvas(ImageCanvasBase):
    """The source image with the inpaint mask painted over it as a translucent colour."""

    maskChanged = Signal()
    #: Emitted when the outpaint buttons, reset or an edge handle change the sides (not when
    #: :meth:`set_outpaint` shows the prompt panel's values).
    outpaintChanged = Signal()
    #: Emitted when brush size, hardness or the eraser change (for persisting them).
    brushChanged = Signal()

    _what = "image"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = MaskModel()
        self._brush = MaskBrush(self._model)
        self._overlay = MaskOverlay()
        self._only_masked_padding: int | None = None
        self._masked_bbox: BBox | None = None
        self._masked_bbox_dirty = True
        self._outpaint = dict.fromkeys(SIDES, 0)  # in pixels of the generated image
        self._target: tuple[int, int] | None = None  # the request's width x height

        self._view = MaskView(self)
        self._view.set_placeholder(
            "Drop an image here, paste it with Ctrl+V,\nor click Open… — then paint the area "
            "to repaint")
        self._view.setAccessibleName("Inpaint mask")
        self.toolbar = MaskToolbar(self, self._view)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        # the tool rows wrap group by group where the pane is narrow (a laptop screen)
        lay.addLayout(wrap_row(self.toolbar.top, self))
        lay.addWidget(self._view, 1)
        lay.addLayout(wrap_row(self.toolbar.bottom, self))
        self.outpaint_bar = OutpaintBar(self)
        lay.addLayout(wrap_row(self.outpaint_bar.row, self))
        self._view.zoomChanged.connect(lambda _z: self.toolbar.update_info())
        self.setFocusProxy(self._view)
        self._sync_controls()

    def _sync_controls(self) -> None:
        self.toolbar.sync()
        self.outpaint_bar.sync()

    # ================================================================ image
    @property
    def viewer(self) -> ImageViewer:
        return self._view

    def set_image(self, image: QImage | None) -> None:
        """Show ``image`` and reset the mask to empty at its size (history cleared)."""
        if image is not None and image.isNull():
            image = None
        self._end_any_stroke()
        self._view.set_image(image)
        w, h = (0, 0) if image is None else (image.width(), image.height())
        self._model.reset(w, h)
        self._overlay.reset(w, h)
        self._masked_bbox_dirty = True
        self._sync_controls()
        self.imageChanged.emit()
        self.maskChanged.emit()

    def image(self) -> QImage | None:
        return self._view.image()

    # ================================================================ mask
    def mask_image(self) -> QImage | None:
        """The mask as Format_Grayscale8 of exactly the image's size (255 = repaint)."""
        if self.image() is None:
            return None
        return array_to_qimage(self._model.arr)

    def mask_array(self) -> np.ndarray | None:
        """A copy of the mask as a (height, width) uint8 array."""
        return self._model.arr.copy() if self.image() is not None else None

    def set_mask(self, mask: QImage) -> None:
        """Replace the mask (one undoable step). It must have the image's size."""
        img = self.image()
        if img is None:
            self.errorOccurred.emit("Load an image before setting a mask.")
            return
        if mask.isNull() or mask.size() != img.size():
            self.errorOccurred.emit(
                f"The mask is {mask.width()}×{mask.height()} but the image is "
                f"{img.width()}×{img.height()}; they must be the same size.")
            return
        self._replace(qimage_to_array(mask))

    def has_mask(self) -> bool:
        return self.image() is not None and not self._model.is_empty()

    def masked_bbox(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) of the masked pixels (x1, y1 exclusive), or None when empty."""
        if self._masked_bbox_dirty:
            self._masked_bbox = self._model.masked_bbox() if self.image() is not None else None
            self._masked_bbox_dirty = False
        return self._masked_bbox

    def clear(self) -> None:
        self._end_any_stroke()
        if self.image() is not None and self._model.clear():
            self._after_whole_change()

    def fill(self) -> None:
        self._end_any_stroke()
        if self.image() is not None and self._model.fill():
            self._after_whole_change()

    def invert(self) -> None:
        self._end_any_stroke()
        if self.image() is not None and self._model.invert():
            self._after_whole_change()

    def undo(self) -> None:
        self._end_any_stroke()
        box = self._model.undo()
        if box is not None:
            self._after_change(box)

    def redo(self) -> None:
        self._end_any_stroke()
        box = self._model.redo()
        if box is not None:
            self._after_change(box)

    def can_undo(self) -> bool:
        return self._model.can_undo()

    def can_redo(self) -> bool:
        return self._model.can_redo()

    @property
    def model(self) -> MaskModel:
        return self._model

    # ---------------------------------------------------------------- files
    def save_mask(self, path: str) -> None:
        """Write the mask as an 8-bit grayscale PNG (atomically). Emits errorOccurred on
        failure."""
        if self.image() is None:
            self.errorOccurred.emit("There is no mask to save: load an image first.")
            return
        target = Path(path).expanduser()
        if not target.suffix:
            target = target.with_suffix(".png")
        try:
            write_mask_png(self._model.arr, target)
        except OSError as exc:
            self.errorOccurred.emit(f"Could not save the mask to {target.name}: "
                                    f"{exc.strerror or exc}")
            return
        file_dialogs.remember("masks", str(target))

    def load_mask(self, path: str) -> bool:
        """Load a mask PNG (white = repaint) as one undoable step.

        Grayscale or RGB masks are read by luminance; a mask whose colour is uniform and whose
        alpha varies is read from its alpha. A mask of another size is scaled when its aspect
        ratio matches the image's (within 1 %), otherwise refused with a message.
        """
        img = self.image()
        if img is None:
            self.errorOccurred.emit("Load an image before loading a mask.")
            return False
        try:
            arr = mask_from_image(open_image_safely(path), img.width(), img.height())
        except ImageInputError as exc:
            self.errorOccurred.emit(str(exc))
            return False
        file_dialogs.remember("masks", path)
        self._replace(arr)
        return True

    def load_mask_dialog(self) -> None:
        path = file_dialogs.open_file(self, "masks", "Load mask",
                                      "Images (*.png *.webp *.bmp *.tif *.tiff);;All files (*)")
        if path:
            self.load_mask(path)

    def save_mask_dialog(self) -> None:
        path = file_dialogs.save_file(self, "masks", "Save mask", "mask.png",
                                      "PNG image (*.png)")
        if path:
            self.save_mask(path)

    # ================================================================ brush settings
    def brush_size(self) -> int:
        """Brush diameter in image pixels."""
        return self._brush.size

    def set_brush_size(self, px: float) -> None:
        """Brush diameter in image pixels, clamped to 1..1024."""
        if self._brush.set_size(px):
            self._brush_changed()

    def hardness(self) -> float:
        return self._brush.hardness

    def set_hardness(self, h: float) -> None:
        if self._brush.set_hardness(h):
            self._sync_controls()
            self.brushChanged.emit()

    def eraser(self) -> bool:
        return self._brush.eraser

    def set_eraser(self, on: bool) -> None:
        if self._brush.set_eraser(on):
            self._brush_changed()

    def grow_brush(self) -> None:
        self.set_brush_size(self._brush.grown_size())

    def shrink_brush(self) -> None:
        self.set_brush_size(self._brush.shrunk_size())

    def _brush_changed(self) -> None:
        """A change the brush cursor shows."""
        self._sync_controls()
        self._view.update()
        self.brushChanged.emit()

    # ================================================================ previews
    def blur_preview(self) -> int:
        return self._overlay.blur

    def set_blur_preview(self, px: int) -> None:
        """Show the mask blurred by ``px`` (Gaussian, PIL's GaussianBlur radius, as the engine
        applies mask blur); 0 shows the mask as painted."""
        px = max(0, min(MAX_BLUR_PREVIEW, int(px)))
        if px == self._overlay.blur:
            return
        self._overlay.blur = px
        self._sync_controls()
        if self.image() is not None:
            self._overlay.refresh(self._model.arr, self._model.full_bbox)
            self._view.update()

    def set_masked_area_preview(self, padding: int | None) -> None:
        """Outline the area "inpaint only masked" works on: the masked pixels' bounding box
        grown by ``padding`` pixels. None hides the outline."""
        self._only_masked_padding = None if padding is None else max(0, int(padding))
        self._view.update()

    def masked_area_rect(self) -> QRectF | None:
        """The outlined "only masked" area in image pixels (for the view), or None."""
        if self._only_masked_padding is None or self.image() is None:
            return None
        box = self.masked_bbox()
        if box is None:
            return None
        x0, y0, x1, y1 = expand(box, self._only_masked_padding, self._model.width,
                                self._model.height)
        return QRectF(x0, y0, x1 - x0, y1 - y0)

    # ================================================================ outpaint
    def outpaint(self) -> dict[str, int]:
        """The sides to extend, {"left": px, ...}, in pixels of the generated image."""
        return dict(self._outpaint)

    def has_outpaint(self) -> bool:
        return self.image() is not None and any(self._outpaint.values())

    def set_outpaint(self, sides: Mapping[str, int]) -> None:
        """Show these sides (the prompt panel's values); emits nothing."""
        new = {side: max(0, int(sides.get(side, 0))) for side in SIDES}
        if new != self._outpaint:
            self._outpaint = new
            self._after_outpaint()

    def outpaint_target(self) -> tuple[int, int] | None:
        return self._target

    def set_outpaint_target(self, width: int, height: int) -> None:
        """The request's size, which the sides extend: the image is shown at it scaled to the
        image's own pixels (the source is fitted to it)."""
        self._target = (int(width), int(height))
        self._after_outpaint()

    def extend_side(self, side: str, by: int | None = None) -> None:
        """Extend ``side`` by ``by`` pixels (default: the bar's step)."""
        if self.image() is None:
            return
        step = self.outpaint_bar.step() if by is None else int(by)
        self._user_outpaint({**self._outpaint, side: self._outpaint[side] + step})

    def reset_outpaint(self) -> None:
        self._user_outpaint(dict.fromkeys(SIDES, 0))

    def drag_side(self, side: str, image_px: float) -> None:
        """An edge handle dragged ``image_px`` image pixels beyond the image's edge: that
        side becomes that distance in generated pixels, rounded to a multiple of 8."""
        px = max(0.0, image_px) / self._scale(side)
        self._user_outpaint({**self._outpaint, side: round(px / STEP) * STEP})

    def _user_outpaint(self, sides: dict[str, int]) -> None:
        if sides != self._outpaint:
            self._outpaint = sides
            self._after_outpaint()
            self.outpaintChanged.emit()

    def _scale(self, side: str) -> float:
        """Image pixels per generated pixel across ``side``."""
        img = self.image()
        if img is None or self._target is None:
            return 1.0
        if side in ("left", "right"):
            return img.width() / max(1, self._target[0])
        return img.height() / max(1, self._target[1])

    def outpaint_rect(self) -> QRectF | None:
        """The extended canvas in image pixels (beyond the image on the extended sides), or
        None without an image."""
        img = self.image()
        if img is None:
            return None
        o = {side: self._outpaint[side] * self._scale(side) for side in SIDES}
        return QRectF(-o["left"], -o["top"], img.width() + o["left"] + o["right"],
                      img.height() + o["top"] + o["bottom"])

    def _after_outpaint(self) -> None:
        if self._view.is_auto_fit() and not self._view.dragging_side():
            self._view.fit()  # (after a drag: the pointer must keep its place meanwhile)
        self._view.update()
        self._sync_controls()

    # ================================================================ painting
    # (called by the view, points in image pixels)
    def begin_stroke(self, point: QPointF, erase: bool, pressure: float) -> None:
        if self.image() is None:
            return
        self._show_stroke(self._brush.begin(point.x(), point.y(), pressure, erase))

    def continue_stroke(self, point: QPointF, pressure: float) -> None:
        self._show_stroke(self._brush.move(point.x(), point.y(), pressure))

    def end_stroke(self) -> None:
        if self._brush.end():
            self._masked_bbox_dirty = True
            self._sync_controls()
            self.maskChanged.emit()

    def _show_stroke(self, box: BBox | None) -> None:
        if box is not None:
            self._overlay.refresh(self._model.arr, box)
            x0, y0, x1, y1 = self._overlay.padded(box, self._model.width, self._model.height)
            self._view.update(self._view.widget_rect_of(QRectF(x0, y0, x1 - x0, y1 - y0)))

    def _end_any_stroke(self) -> None:
        if self._model.in_stroke:
            self._view.forget_stroke()
            self.end_stroke()

    # ================================================================ overlay
    def overlay_image(self) -> QImage | None:
        """The overlay for the view to draw over the image, or None."""
        ov = self._overlay.pixels
        if ov is None or ov.size == 0:
            return None
        h, w = ov.shape
        # a view onto the array, no copy: painting reads the freshly coloured pixels
        return QImage(ov.data, w, h, w * 4, QImage.Format.Format_ARGB32_Premultiplied)

    def _replace(self, arr: np.ndarray) -> None:
        self._end_any_stroke()
        if self._model.replace(arr):
            self._after_whole_change()

    def _after_whole_change(self) -> None:
        self._after_change(self._model.full_bbox)

    def _after_change(self, box: BBox) -> None:
        self._overlay.refresh(self._model.arr, box)
        self._masked_bbox_dirty = True
        self._view.update()
        self._sync_controls()
        self.maskChanged.emit()

    def _set_drag_hover(self, on: bool) -> None:
        super()._set_drag_hover(on)
        self._view.set_drop_highlight(on)

    # ================================================================ keys
    def handles_key(self, event: QKeyEvent) -> bool:
        return super().handles_key(event) or self._key_action(event) is not None

    def _key_action(self, event: QKeyEvent) -> str | None:
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ctrl = Qt.KeyboardModifier.ControlModifier
        shift = Qt.KeyboardModifier.ShiftModifier
        if event.matches(QKeySequence.StandardKey.Redo) or (
                key == Qt.Key.Key_Z and mods == ctrl | shift) or (
                key == Qt.Key.Key_Y and mods == ctrl):
            return "redo"
        if event.matches(QKeySequence.StandardKey.Undo) or (key == Qt.Key.Key_Z and mods == ctrl):
            return "undo"
        if event.matches(QKeySequence.StandardKey.Open):
            return "open"
        if key == Qt.Key.Key_I and mods == ctrl:
            return "invert"
        if mods in (Qt.KeyboardModifier.NoModifier, shift):
            if key == Qt.Key.Key_BracketLeft:
                return "shrink"
            if key == Qt.Key.Key_BracketRight:
                return "grow"
        if mods == Qt.KeyboardModifier.NoModifier:
            if key == Qt.Key.Key_E:
                return "eraser"
            if key == Qt.Key.Key_B:
                return "brush"
        return None

    def keyPressEvent(self, event: QKeyEvent) -> None:
        action = self._key_action(event)
        if action is None:
            super().keyPressEvent(event)
            return
        event.accept()
        if action == "undo":
            self.undo()
        elif action == "redo":
            self.redo()
        elif action == "open":
            self.open_dialog()
        elif action == "invert":
            self.invert()
        elif action == "shrink":
            self.shrink_brush()
        elif action == "grow":
            self.grow_brush()
        elif action == "eraser":
            self.set_eraser(not self.eraser())
        elif action == "brush":
            self.set_eraser(False)
