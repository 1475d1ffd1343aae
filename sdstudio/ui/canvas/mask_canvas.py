"""MaskCanvas: paint the inpaint mask over the source image.

The mask lives in a :class:`~sdstudio.ui.canvas.mask_model.MaskModel` (a uint8 array the size
of the image). Each mouse or tablet move paints one capsule segment into it, in image
coordinates, and only the changed box of the translucent overlay is recoloured and repainted;
the image itself is never recomposed during a stroke.

Mouse: left paints (erases with the eraser on), right always erases, middle button or
space+drag pans, the wheel zooms around the cursor, double-click with the middle button fits.
Keys (while the canvas has focus): ``[`` / ``]`` brush size, ``E`` eraser, ``B`` brush,
Ctrl+Z undo, Ctrl+Shift+Z or Ctrl+Y redo, Ctrl+I invert, Ctrl+V paste an image, Ctrl+O open,
``0`` fit, ``1`` actual size, ``+`` / ``-`` zoom.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFocusEvent,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPen,
    QPointingDevice,
    QTabletEvent,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import ImageInputError
from sdstudio.ui.canvas.base import ImageCanvasBase, ToolSeparator, add_info_and_fit, tool_button
from sdstudio.ui.canvas.mask_model import BBox, MaskModel
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.imageutil import array_to_qimage, open_image_safely, qimage_to_array

MIN_BRUSH = 1
MAX_BRUSH = 1024
DEFAULT_BRUSH = 48
DEFAULT_HARDNESS = 0.8
MAX_BLUR_PREVIEW = 64
MASK_COLOR = QColor(236, 44, 96)  # overlay colour of masked pixels
MASK_OPACITY = 0.55
SIZE_STEP = 1.15  # [ and ] scale the brush by this factor (at least one pixel)
_SLIDER_STEPS = 1000  # the size slider is logarithmic: 1 px .. MAX_BRUSH px


def _size_to_slider(size: int) -> int:
    return round(math.log(max(1, size)) / math.log(MAX_BRUSH) * _SLIDER_STEPS)


def _slider_to_size(v: int) -> int:
    return max(MIN_BRUSH, min(MAX_BRUSH, round(MAX_BRUSH ** (v / _SLIDER_STEPS))))


def _expand(b: BBox, pad: int, w: int, h: int) -> BBox:
    return (max(0, b[0] - pad), max(0, b[1] - pad), min(w, b[2] + pad), min(h, b[3] + pad))


class _MaskView(ImageViewer):
    """The viewer part of the mask canvas: draws the overlay and the brush cursor and turns
    mouse and tablet input into strokes on its canvas."""

    left_button_pans = False

    def __init__(self, canvas: MaskCanvas) -> None:
        super().__init__(canvas)
        self._canvas = canvas
        self._hover: QPointF | None = None
        self._stroking = False
        self._stroke_button = Qt.MouseButton.NoButton
        self._tablet_down = False
        self.setAttribute(Qt.WidgetAttribute.WA_TabletTracking, True)

    # ---------------------------------------------------------------- drawing
    def paint_image_overlay(self, painter: QPainter) -> None:
        overlay = self._canvas._overlay_qimage()
        if overlay is not None:
            painter.drawImage(0, 0, overlay)

    def paint_foreground(self, painter: QPainter) -> None:
        area = self._canvas._masked_area_rect()
        if area is not None:
            r = QRectF(self.map_from_image(area.topLeft()), self.map_from_image(area.bottomRight()))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0, 150), 3))
            painter.drawRect(r)
            painter.setPen(QPen(QColor(255, 255, 255, 230), 1.2, Qt.PenStyle.DashLine))
            painter.drawRect(r)
        if self._hover is None or not self.has_image() or self.is_panning() or self.space_held():
            return
        radius = self._canvas.brush_size() / 2.0 * self.zoom()
        c = self._hover
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3.0))
        painter.drawEllipse(c, radius, radius)
        erasing = self._canvas.eraser() or self._stroke_button == Qt.MouseButton.RightButton
        painter.setPen(QPen(QColor(255, 255, 255) if not erasing else QColor(120, 200, 255),
                            1.4, Qt.PenStyle.SolidLine if not erasing else Qt.PenStyle.DashLine))
        painter.drawEllipse(c, radius, radius)
        # centre mark so the hot spot is visible at any brush size
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3.0))
        painter.drawPoint(c)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5))
        painter.drawPoint(c)

    def cursor_rect(self, pos: QPointF | None) -> QRectF:
        if pos is None:
            return QRectF()
        r = self._canvas.brush_size() / 2.0 * self.zoom() + 4
        return QRectF(pos.x() - r, pos.y() - r, 2 * r, 2 * r)

    def _move_hover(self, pos: QPointF | None) -> None:
        old = self.cursor_rect(self._hover)
        self._hover = QPointF(pos) if pos is not None else None
        self.update(old.toAlignedRect())
        self.update(self.cursor_rect(self._hover).toAlignedRect())

    def update_cursor(self) -> None:
        if self.is_panning():
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif not self.has_image():
            self.unsetCursor()
        elif self.space_held():
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.setCursor(Qt.CursorShape.BlankCursor)  # the brush outline is the cursor
        self.update()

    # ---------------------------------------------------------------- mouse
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        b = event.button()
        if self._stroking or self._tablet_down:
            event.accept()
            return
        if self.has_image() and b in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton) \
                and not self.space_held():
            self._stroking = True
            self._stroke_button = b
            self._canvas._stroke_begin(self.map_to_image(event.position()),
                                       erase=b == Qt.MouseButton.RightButton, pressure=1.0)
            self._move_hover(event.position())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._stroking:
            self._canvas._stroke_to(self.map_to_image(event.position()), pressure=1.0)
        self._move_hover(event.position())
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._stroking and event.button() == self._stroke_button:
            self._canvas._stroke_to(self.map_to_image(event.position()), pressure=1.0)
            self._stroking = False
            self._stroke_button = Qt.MouseButton.NoButton
            self._canvas._stroke_end()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        # a double-click with a painting button is just another dab, never "fit"
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            self.mousePressEvent(event)
            return
        super().mouseDoubleClickEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._move_hover(None)
        super().leaveEvent(event)

    def focusOutEvent(self, event: QFocusEvent) -> None:
        if self._stroking:
            self._stroking = False
            self._stroke_button = Qt.MouseButton.NoButton
            self._canvas._stroke_end()
        super().focusOutEvent(event)

    # ---------------------------------------------------------------- tablet
    def tabletEvent(self, event: QTabletEvent) -> None:
        et = event.type()
        pressure = float(event.pressure()) if event.pressure() > 0 else 0.0
        pos = event.position()
        erase = event.pointerType() == QPointingDevice.PointerType.Eraser
        if et == QEvent.Type.TabletPress:
            if not self.has_image() or self.space_held() or self._stroking:
                event.ignore()  # let Qt synthesise a mouse press (pan etc.)
                return
            self.setFocus(Qt.FocusReason.MouseFocusReason)
            self._tablet_down = True
            erase = erase or event.button() == Qt.MouseButton.RightButton
            self._canvas._stroke_begin(self.map_to_image(pos), erase=erase, pressure=pressure)
        elif et == QEvent.Type.TabletMove:
            if self._tablet_down:
                self._canvas._stroke_to(self.map_to_image(pos), pressure=pressure)
            elif self.is_panning() or self._stroking:
                event.ignore()
                return
        elif et == QEvent.Type.TabletRelease:
            if not self._tablet_down:
                event.ignore()
                return
            self._tablet_down = False
            self._canvas._stroke_end()
        else:
            event.ignore()
            return
        self._move_hover(pos)
        event.accept()


class MaskCanvas(ImageCanvasBase):
    """The source image with the inpaint mask painted over it as a translucent colour."""

    maskChanged = Signal()
    #: Emitted when brush size, hardness or the eraser change (for persisting them).
    brushChanged = Signal()

    _what = "image"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = MaskModel()
        self._overlay: np.ndarray | None = None  # (h, w) uint32, premultiplied ARGB
        self._brush_size = DEFAULT_BRUSH
        self._hardness = DEFAULT_HARDNESS
        self._eraser = False
        self._blur = 0
        self._stroke_erase = False
        self._last_point: QPointF | None = None
        self._last_pressure = 1.0
        self._only_masked_padding: int | None = None
        self._masked_bbox: BBox | None = None
        self._masked_bbox_dirty = True
        rgb = MASK_COLOR
        a = round(255 * MASK_OPACITY)
        # lookup table: mask value -> overlay pixel (premultiplied ARGB32)
        vals = np.arange(256, dtype=np.uint32) * a // 255
        self._lut = ((vals << 24) | ((vals * rgb.red() // 255) << 16)
                     | ((vals * rgb.green() // 255) << 8) | (vals * rgb.blue() // 255)
                     ).astype(np.uint32)

        self._view = _MaskView(self)
        self._view.set_placeholder(
            "Drop an image here, paste it with Ctrl+V,\nor click Open… — then paint the area "
            "to repaint")
        self._view.setAccessibleName("Inpaint mask")
        self._build_ui()
        self._view.zoomChanged.connect(lambda _z: self._update_info())
        self.setFocusProxy(self._view)
        self._sync_controls()

    # ================================================================ UI
    def _build_ui(self) -> None:
        # --- tool row: brush / eraser, size, hardness, undo/redo, clear/fill/invert
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(2)
        self.brush_button = tool_button(self, "brush", "Brush",
                                        "Brush: paint the area to repaint (B)\n"
                                        "Right button erases", checkable=True)
        self.eraser_button = tool_button(self, "eraser", "Eraser",
                                         "Eraser (E)\nThe right mouse button always erases",
                                         checkable=True)
        group = QButtonGroup(self)
        group.setExclusive(True)
        group.addButton(self.brush_button)
        group.addButton(self.eraser_button)
        self.brush_button.setChecked(True)
        self.brush_button.toggled.connect(lambda on: on and self.set_eraser(False))
        self.eraser_button.toggled.connect(lambda on: on and self.set_eraser(True))
        top.addWidget(self.brush_button)
        top.addWidget(self.eraser_button)
        top.addWidget(self._separator())

        size_label = QLabel("Size", self)
        self.size_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.size_slider.setRange(0, _SLIDER_STEPS)
        self.size_slider.setMinimumWidth(70)
        self.size_slider.setMaximumWidth(160)
        self.size_slider.setToolTip("Brush diameter in image pixels ([ smaller, ] larger)")
        self.size_slider.setAccessibleName("Brush size")
        self.size_spin = QSpinBox(self)
        self.size_spin.setRange(MIN_BRUSH, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip(self.size_slider.toolTip())
        self.size_spin.setAccessibleName("Brush size in pixels")
        self.size_spin.setKeyboardTracking(False)
        size_label.setBuddy(self.size_spin)
        self.size_slider.valueChanged.connect(lambda v: self.set_brush_size(_slider_to_size(v)))
        self.size_spin.valueChanged.connect(self.set_brush_size)
        top.addWidget(size_label)
        top.addSpacing(4)
        top.addWidget(self.size_slider, 2)
        top.addWidget(self.size_spin)
        top.addSpacing(10)

        hard_label = QLabel("Hardness", self)
        self.hardness_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.hardness_slider.setRange(0, 100)
        self.hardness_slider.setMinimumWidth(60)
        self.hardness_slider.setMaximumWidth(120)
        self.hardness_slider.setToolTip("Edge hardness: 100 % is a crisp edge, 0 % a soft falloff")
        self.hardness_slider.setAccessibleName("Brush hardness")
        self.hardness_spin = QSpinBox(self)
        self.hardness_spin.setRange(0, 100)
        self.hardness_spin.setSuffix(" %")
        self.hardness_spin.setToolTip(self.hardness_slider.toolTip())
        self.hardness_spin.setAccessibleName("Brush hardness in percent")
        hard_label.setBuddy(self.hardness_spin)
        self.hardness_slider.valueChanged.connect(lambda v: self.set_hardness(v / 100.0))
        self.hardness_spin.valueChanged.connect(lambda v: self.set_hardness(v / 100.0))
        top.addWidget(hard_label)
        top.addSpacing(4)
        top.addWidget(self.hardness_slider, 1)
        top.addWidget(self.hardness_spin)
        top.addWidget(self._separator())

        self.undo_button = tool_button(self, "undo", "Undo", "Undo the last stroke (Ctrl+Z)")
        self.redo_button = tool_button(self, "redo", "Redo",
                                       "Redo (Ctrl+Shift+Z or Ctrl+Y)")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        top.addWidget(self.undo_button)
        top.addWidget(self.redo_button)
        top.addWidget(self._separator())
        self.clear_button = tool_button(self, "clear-mask", "Clear mask",
                                        "Clear the mask: keep the whole image")
        self.fill_button = tool_button(self, "fill", "Fill mask",
                                       "Fill the mask: repaint the whole image")
        self.invert_button = tool_button(self, "invert", "Invert mask",
                                         "Invert the mask (Ctrl+I)")
        self.clear_button.clicked.connect(self.clear)
        self.fill_button.clicked.connect(self.fill)
        self.invert_button.clicked.connect(self.invert)
        top.addWidget(self.clear_button)
        top.addWidget(self.fill_button)
        top.addWidget(self.invert_button)
        top.addStretch(1)

        # --- bottom row: image and mask files, blur preview, info, fit
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.setSpacing(2)
        self.open_button = tool_button(self, "open", "Open…", "Open an image file (Ctrl+O)",
                                       with_text=True)
        self.paste_button = tool_button(self, "paste", "Paste",
                                        "Paste an image from the clipboard (Ctrl+V)",
                                        with_text=True)
        self.open_button.clicked.connect(self.open_dialog)
        self.paste_button.clicked.connect(self.paste)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.paste_button)
        bottom.addWidget(self._separator())
        self.load_mask_button = tool_button(self, "load", "Load mask…",
                                            "Load a mask from a PNG (white = repaint)",
                                            with_text=True)
        self.save_mask_button = tool_button(self, "save", "Save mask…",
                                            "Save the mask as a grayscale PNG", with_text=True)
        self.load_mask_button.clicked.connect(self._load_mask_dialog)
        self.save_mask_button.clicked.connect(self._save_mask_dialog)
        bottom.addWidget(self.load_mask_button)
        bottom.addWidget(self.save_mask_button)
        bottom.addWidget(self._separator())
        blur_label = QLabel("Blur preview", self)
        self.blur_spin = QSpinBox(self)
        self.blur_spin.setRange(0, MAX_BLUR_PREVIEW)
        self.blur_spin.setSuffix(" px")
        self.blur_spin.setSpecialValueText("Off")
        self.blur_spin.setToolTip("Show the mask blurred as the generation will use it "
                                  "(the mask blur setting)")
        self.blur_spin.setAccessibleName("Mask blur preview")
        blur_label.setBuddy(self.blur_spin)
        self.blur_spin.valueChanged.connect(self.set_blur_preview)
        bottom.addWidget(blur_label)
        bottom.addSpacing(4)
        bottom.addWidget(self.blur_spin)
        bottom.addStretch(1)
        self.info_label, self.fit_button = add_info_and_fit(
            self, bottom, self._view, "Fit the image to the view (0; 1 for actual size)")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(self._view, 1)
        lay.addLayout(bottom)

    def _separator(self) -> ToolSeparator:
        return ToolSeparator(self)

    def _sync_controls(self) -> None:
        # blockSignals, not ``with QSignalBlocker(...)``: in PySide6 6.12 the context manager's
        # __exit__ over-releases None (a refcount bug that crashes the interpreter at exit).
        widgets = (self.size_slider, self.size_spin, self.hardness_slider, self.hardness_spin,
                   self.brush_button, self.eraser_button, self.blur_spin)
        old = [w.blockSignals(True) for w in widgets]
        try:
            self.size_slider.setValue(_size_to_slider(self._brush_size))
            self.size_spin.setValue(self._brush_size)
            h = round(self._hardness * 100)
            self.hardness_slider.setValue(h)
            self.hardness_spin.setValue(h)
            self.brush_button.setChecked(not self._eraser)
            self.eraser_button.setChecked(self._eraser)
            self.blur_spin.setValue(self._blur)
        finally:
            for w, was in zip(widgets, old, strict=True):
                w.blockSignals(was)
        has = self.image() is not None
        self.undo_button.setEnabled(self._model.can_undo())
        self.redo_button.setEnabled(self._model.can_redo())
        for b in (self.clear_button, self.fill_button, self.invert_button,
                  self.load_mask_button, self.save_mask_button, self.fit_button):
            b.setEnabled(has)
        self._update_info()

    def _update_info(self) -> None:
        img = self.image()
        if img is None:
            self.info_label.setText("")
            return
        masked = self._model.coverage() * 100
        self.info_label.setText(
            f"{img.width()} × {img.height()} px  ·  {masked:.0f} % masked  ·  "
            f"{round(self._view.zoom() * 100)} %")

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
        if image is None:
            self._model.reset(0, 0)
            self._overlay = None
        else:
            self._model.reset(image.width(), image.height())
            self._overlay = np.zeros((image.height(), image.width()), dtype=np.uint32)
        self._masked_bbox_dirty = True
        self._sync_controls()
        self.imageChanged.emit()
        self.maskChanged.emit()

    def image(self) -> QImage | None:
        return self._view.image()

    # ================================================================ mask
    def mask(self) -> QImage | None:
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
        tmp_name = ""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".mask-", suffix=".png.tmp",
                                            dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                Image.fromarray(self._model.arr, "L").save(fh, format="PNG")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, target)
        except OSError as exc:
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
            self.errorOccurred.emit(f"Could not save the mask to {target.name}: "
                                    f"{exc.strerror or exc}")
            return
        self._last_dir = str(target.parent)

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
            pil = open_image_safely(path)
        except ImageInputError as exc:
            self.errorOccurred.emit(str(exc))
            return False
        if pil.mode == "RGBA":
            rgba = np.asarray(pil)
            alpha = rgba[..., 3]
            if alpha.min() != alpha.max() and all(
                    rgba[..., c].min() == rgba[..., c].max() for c in range(3)):
                pil = Image.fromarray(alpha, "L")
            else:
                pil = pil.convert("L")
        elif pil.mode != "L":
            pil = pil.convert("L")
        w, h = img.width(), img.height()
        if pil.size != (w, h):
            aspect_ok = abs(pil.width / pil.height - w / h) <= 0.01 * (w / h)
            if not aspect_ok:
                self.errorOccurred.emit(
                    f"The mask is {pil.width}×{pil.height} but the image is {w}×{h}; "
                    "their shapes differ.")
                return False
            pil = pil.resize((w, h), Image.Resampling.BILINEAR)
        self._last_dir = str(Path(path).expanduser().resolve().parent)
        self._replace(np.asarray(pil, dtype=np.uint8))
        return True

    def _load_mask_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load mask", self._last_dir,
                                              "Images (*.png *.webp *.bmp *.tif *.tiff);;"
                                              "All files (*)")
        if path:
            self.load_mask(path)

    def _save_mask_dialog(self) -> None:
        start = str(Path(self._last_dir or str(Path.home())) / "mask.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", start, "PNG image (*.png)")
        if path:
            self.save_mask(path)

    # ================================================================ brush settings
    def brush_size(self) -> int:
        """Brush diameter in image pixels."""
        return self._brush_size

    def set_brush_size(self, px: float) -> None:
        """Brush diameter in image pixels, clamped to 1..1024."""
        size = max(MIN_BRUSH, min(MAX_BRUSH, round(px)))
        if size == self._brush_size:
            return
        self._brush_size = size
        self._sync_controls()
        self._view.update()
        self.brushChanged.emit()

    def hardness(self) -> float:
        return self._hardness

    def set_hardness(self, h: float) -> None:
        h = min(1.0, max(0.0, float(h)))
        if abs(h - self._hardness) < 1e-9:
            return
        self._hardness = h
        self._sync_controls()
        self.brushChanged.emit()

    def eraser(self) -> bool:
        return self._eraser

    def set_eraser(self, on: bool) -> None:
        on = bool(on)
        if on == self._eraser:
            return
        self._eraser = on
        self._sync_controls()
        self._view.update()
        self.brushChanged.emit()

    def grow_brush(self) -> None:
        self.set_brush_size(max(self._brush_size + 1, round(self._brush_size * SIZE_STEP)))

    def shrink_brush(self) -> None:
        self.set_brush_size(min(self._brush_size - 1, round(self._brush_size / SIZE_STEP)))

    # ================================================================ previews
    def blur_preview(self) -> int:
        return self._blur

    def set_blur_preview(self, px: int) -> None:
        """Show the mask blurred by ``px`` (Gaussian, PIL's GaussianBlur radius, as the engine
        applies mask blur); 0 shows the mask as painted."""
        px = max(0, min(MAX_BLUR_PREVIEW, int(px)))
        if px == self._blur:
            return
        self._blur = px
        self._sync_controls()
        if self.image() is not None:
            self._refresh_overlay(self._model.full_bbox)
            self._view.update()

    def set_masked_area_preview(self, padding: int | None) -> None:
        """Outline the area "inpaint only masked" works on: the masked pixels' bounding box
        grown by ``padding`` pixels. None hides the outline."""
        self._only_masked_padding = None if padding is None else max(0, int(padding))
        self._view.update()

    def _masked_area_rect(self) -> QRectF | None:
        if self._only_masked_padding is None or self.image() is None:
            return None
        box = self.masked_bbox()
        if box is None:
            return None
        x0, y0, x1, y1 = _expand(box, self._only_masked_padding, self._model.width,
                                 self._model.height)
        return QRectF(x0, y0, x1 - x0, y1 - y0)

    # ================================================================ painting
    def _radius(self, pressure: float) -> float:
        p = 1.0 if pressure <= 0 else min(1.0, pressure)
        return max(0.5, self._brush_size / 2.0 * max(0.05, p))

    def _stroke_begin(self, point: QPointF, erase: bool, pressure: float) -> None:
        if self.image() is None:
            return
        self._stroke_erase = erase or self._eraser
        self._model.begin_stroke()
        self._last_point = QPointF(point)
        self._last_pressure = pressure
        self._segment(point, point, pressure, pressure)

    def _stroke_to(self, point: QPointF, pressure: float) -> None:
        if self._last_point is None or not self._model.in_stroke:
            return
        if point == self._last_point and pressure == self._last_pressure:
            return
        self._segment(self._last_point, point, self._last_pressure, pressure)
        self._last_point = QPointF(point)
        self._last_pressure = pressure

    def _segment(self, a: QPointF, b: QPointF, pa: float, pb: float) -> None:
        box = self._model.stroke_segment(a.x(), a.y(), b.x(), b.y(), self._radius(pa),
                                         self._radius(pb), self._hardness, self._stroke_erase)
        if box is not None:
            self._refresh_overlay(box)
            x0, y0, x1, y1 = self._padded(box)
            self._view.update(self._view.widget_rect_of(QRectF(x0, y0, x1 - x0, y1 - y0)))

    def _stroke_end(self) -> None:
        self._last_point = None
        if self._model.end_stroke():
            self._masked_bbox_dirty = True
            self._sync_controls()
            self.maskChanged.emit()

    def _end_any_stroke(self) -> None:
        if self._model.in_stroke:
            view = self._view
            view._stroking = False
            view._tablet_down = False
            view._stroke_button = Qt.MouseButton.NoButton
            self._stroke_end()

    # ================================================================ overlay
    def _padded(self, box: BBox) -> BBox:
        """The overlay box affected by a change in ``box`` (wider when blur is shown)."""
        if self._blur <= 0:
            return box
        return _expand(box, 3 * self._blur + 2, self._model.width, self._model.height)

    def _refresh_overlay(self, box: BBox) -> None:
        """Recolour the overlay where a change in ``box`` shows."""
        if self._overlay is None:
            return
        w, h = self._model.width, self._model.height
        if self._blur <= 0:
            x0, y0, x1, y1 = box
            self._overlay[y0:y1, x0:x1] = self._lut[self._model.arr[y0:y1, x0:x1]]
            return
        pad = 3 * self._blur + 2
        out = _expand(box, pad, w, h)
        src = _expand(out, pad, w, h)
        crop = Image.fromarray(self._model.arr[src[1]:src[3], src[0]:src[2]], "L")
        blurred = np.asarray(crop.filter(ImageFilter.GaussianBlur(self._blur)))
        ox, oy = out[0] - src[0], out[1] - src[1]
        part = blurred[oy:oy + out[3] - out[1], ox:ox + out[2] - out[0]]
        self._overlay[out[1]:out[3], out[0]:out[2]] = self._lut[part]

    def _overlay_qimage(self) -> QImage | None:
        ov = self._overlay
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
        self._refresh_overlay(box)
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
            self.set_eraser(not self._eraser)
        elif action == "brush":
            self.set_eraser(False)
