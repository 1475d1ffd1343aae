"""The mask canvas's two tool rows, above and below the image.

Top: brush and eraser, size (a logarithmic slider and a spin box) and hardness, undo and redo,
clear, fill and invert. Bottom: open or paste the image, load or save the mask, the mask blur
preview, a status line (size, masked share, zoom) and "Fit". The widgets are children of the
canvas, act on it through its public methods, and :meth:`MaskToolbar.sync` shows its state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QSlider, QSpinBox

from sdstudio.ui.canvas.base import (
    ToolSeparator,
    add_info_and_fit,
    open_and_paste_buttons,
    tool_button,
)
from sdstudio.ui.canvas.mask_paint import (
    MAX_BLUR_PREVIEW,
    MAX_BRUSH,
    MIN_BRUSH,
    SLIDER_STEPS,
    size_to_slider,
    slider_to_size,
)
from sdstudio.ui.canvas.viewer import ImageViewer

if TYPE_CHECKING:
    from sdstudio.ui.canvas.mask_canvas import MaskCanvas


class MaskToolbar:
    """Builds the rows (``top`` and ``bottom`` layouts, for the canvas to place around its
    view) and keeps their widgets in step with the canvas."""

    def __init__(self, canvas: MaskCanvas, view: ImageViewer) -> None:
        self._canvas = canvas
        self._view = view
        self.top = self._build_top(canvas)
        self.bottom = self._build_bottom(canvas, view)

    def _build_top(self, canvas: MaskCanvas) -> QHBoxLayout:
        """Brush / eraser, size, hardness, undo / redo, clear / fill / invert."""
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(2)
        self.brush_button = tool_button(canvas, "brush", "Brush",
                                        "Brush: paint the area to repaint (B)\n"
                                        "Right button erases", checkable=True)
        self.eraser_button = tool_button(canvas, "eraser", "Eraser",
                                         "Eraser (E)\nThe right mouse button always erases",
                                         checkable=True)
        group = QButtonGroup(canvas)
        group.setExclusive(True)
        group.addButton(self.brush_button)
        group.addButton(self.eraser_button)
        self.brush_button.setChecked(True)
        self.brush_button.toggled.connect(self._on_brush_toggled)
        self.eraser_button.toggled.connect(self._on_eraser_toggled)
        top.addWidget(self.brush_button)
        top.addWidget(self.eraser_button)
        top.addWidget(ToolSeparator(canvas))

        size_label = QLabel("Size", canvas)
        self.size_slider = QSlider(Qt.Orientation.Horizontal, canvas)
        self.size_slider.setRange(0, SLIDER_STEPS)
        self.size_slider.setMinimumWidth(70)
        self.size_slider.setMaximumWidth(160)
        self.size_slider.setToolTip("Brush diameter in image pixels ([ smaller, ] larger)")
        self.size_slider.setAccessibleName("Brush size")
        self.size_spin = QSpinBox(canvas)
        self.size_spin.setRange(MIN_BRUSH, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip(self.size_slider.toolTip())
        self.size_spin.setAccessibleName("Brush size in pixels")
        self.size_spin.setKeyboardTracking(False)
        size_label.setBuddy(self.size_spin)
        self.size_slider.valueChanged.connect(lambda v: canvas.set_brush_size(slider_to_size(v)))
        self.size_spin.valueChanged.connect(canvas.set_brush_size)
        top.addWidget(size_label)
        top.addSpacing(4)
        top.addWidget(self.size_slider, 2)
        top.addWidget(self.size_spin)
        top.addSpacing(10)

        hard_label = QLabel("Hardness", canvas)
        self.hardness_slider = QSlider(Qt.Orientation.Horizontal, canvas)
        self.hardness_slider.setRange(0, 100)
        self.hardness_slider.setMinimumWidth(60)
        self.hardness_slider.setMaximumWidth(120)
        self.hardness_slider.setToolTip("Edge hardness: 100 % is a crisp edge, 0 % a soft falloff")
        self.hardness_slider.setAccessibleName("Brush hardness")
        self.hardness_spin = QSpinBox(canvas)
        self.hardness_spin.setRange(0, 100)
        self.hardness_spin.setSuffix(" %")
        self.hardness_spin.setToolTip(self.hardness_slider.toolTip())
        self.hardness_spin.setAccessibleName("Brush hardness in percent")
        hard_label.setBuddy(self.hardness_spin)
        self.hardness_slider.valueChanged.connect(lambda v: canvas.set_hardness(v / 100.0))
        self.hardness_spin.valueChanged.connect(lambda v: canvas.set_hardness(v / 100.0))
        top.addWidget(hard_label)
        top.addSpacing(4)
        top.addWidget(self.hardness_slider, 1)
        top.addWidget(self.hardness_spin)
        top.addWidget(ToolSeparator(canvas))

        self.undo_button = tool_button(canvas, "undo", "Undo", "Undo the last stroke (Ctrl+Z)")
        self.redo_button = tool_button(canvas, "redo", "Redo",
                                       "Redo (Ctrl+Shift+Z or Ctrl+Y)")
        self.undo_button.clicked.connect(canvas.undo)
        self.redo_button.clicked.connect(canvas.redo)
        top.addWidget(self.undo_button)
        top.addWidget(self.redo_button)
        top.addWidget(ToolSeparator(canvas))
        self.clear_button = tool_button(canvas, "clear-mask", "Clear mask",
                                        "Clear the mask: keep the whole image")
        self.fill_button = tool_button(canvas, "fill", "Fill mask",
                                       "Fill the mask: repaint the whole image")
        self.invert_button = tool_button(canvas, "invert", "Invert mask",
                                         "Invert the mask (Ctrl+I)")
        self.clear_button.clicked.connect(canvas.clear)
        self.fill_button.clicked.connect(canvas.fill)
        self.invert_button.clicked.connect(canvas.invert)
        top.addWidget(self.clear_button)
        top.addWidget(self.fill_button)
        top.addWidget(self.invert_button)
        top.addStretch(1)
        return top

    def _build_bottom(self, canvas: MaskCanvas, view: ImageViewer) -> QHBoxLayout:
        """Image and mask files, blur preview, info, fit."""
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.setSpacing(2)
        self.open_button, self.paste_button = open_and_paste_buttons(canvas)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.paste_button)
        bottom.addWidget(ToolSeparator(canvas))
        self.load_mask_button = tool_button(canvas, "load", "Load mask…",
                                            "Load a mask from a PNG (white = repaint)",
                                            with_text=True)
        self.save_mask_button = tool_button(canvas, "save", "Save mask…",
                                            "Save the mask as a grayscale PNG", with_text=True)
        self.load_mask_button.clicked.connect(canvas.load_mask_dialog)
        self.save_mask_button.clicked.connect(canvas.save_mask_dialog)
        bottom.addWidget(self.load_mask_button)
        bottom.addWidget(self.save_mask_button)
        bottom.addWidget(ToolSeparator(canvas))
        blur_label = QLabel("Blur preview", canvas)
        self.blur_spin = QSpinBox(canvas)
        self.blur_spin.setRange(0, MAX_BLUR_PREVIEW)
        self.blur_spin.setSuffix(" px")
        self.blur_spin.setSpecialValueText("Off")
        self.blur_spin.setToolTip("Show the mask blurred as the generation will use it "
                                  "(the mask blur setting)")
        self.blur_spin.setAccessibleName("Mask blur preview")
        blur_label.setBuddy(self.blur_spin)
        self.blur_spin.valueChanged.connect(canvas.set_blur_preview)
        bottom.addWidget(blur_label)
        bottom.addSpacing(4)
        bottom.addWidget(self.blur_spin)
        bottom.addStretch(1)
        self.info_label, self.fit_button = add_info_and_fit(
            canvas, bottom, view, "Fit the image to the view (0; 1 for actual size)")
        return bottom

    def _on_brush_toggled(self, on: bool) -> None:
        if on:
            self._canvas.set_eraser(False)

    def _on_eraser_toggled(self, on: bool) -> None:
        if on:
            self._canvas.set_eraser(True)

    def sync(self) -> None:
        """Show the canvas's brush, blur preview, history and image state."""
        canvas = self._canvas
        # blockSignals, not ``with QSignalBlocker(...)``: in PySide6 6.12 the context manager's
        # __exit__ over-releases None (a refcount bug that crashes the interpreter at exit).
        widgets = (self.size_slider, self.size_spin, self.hardness_slider, self.hardness_spin,
                   self.brush_button, self.eraser_button, self.blur_spin)
        old = [w.blockSignals(True) for w in widgets]
        try:
            self.size_slider.setValue(size_to_slider(canvas.brush_size()))
            self.size_spin.setValue(canvas.brush_size())
            h = round(canvas.hardness() * 100)
            self.hardness_slider.setValue(h)
            self.hardness_spin.setValue(h)
            self.brush_button.setChecked(not canvas.eraser())
            self.eraser_button.setChecked(canvas.eraser())
            self.blur_spin.setValue(canvas.blur_preview())
        finally:
            for w, was in zip(widgets, old, strict=True):
                w.blockSignals(was)
        has = canvas.image() is not None
        self.undo_button.setEnabled(canvas.can_undo())
        self.redo_button.setEnabled(canvas.can_redo())
        for b in (self.clear_button, self.fill_button, self.invert_button,
                  self.load_mask_button, self.save_mask_button, self.fit_button):
            b.setEnabled(has)
        self.update_info()

    def update_info(self) -> None:
        img = self._canvas.image()
        if img is None:
            self.info_label.setText("")
            return
        masked = self._canvas.model.coverage() * 100
        self.info_label.setText(
            f"{img.width()} × {img.height()} px  ·  {masked:.0f} % masked  ·  "
            f"{round(self._view.zoom() * 100)} %")
