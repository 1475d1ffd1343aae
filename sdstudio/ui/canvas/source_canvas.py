"""SourceCanvas: the image-to-image source, with a frame that shows how it fits the target size.

Fit modes (``core.request.RESIZE_MODES``), as AUTOMATIC1111 names them:

* ``resize`` — "Just resize": stretch the whole image to the target size (aspect may change);
* ``crop``   — "Crop and resize": scale to cover the target, crop the overflow, centred;
* ``fill``   — "Resize and fill": scale to fit inside the target, fill the empty sides.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFontMetricsF,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QTransform,
)
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.request import RESIZE_MODES
from sdstudio.ui.canvas.base import (
    ImageCanvasBase,
    add_info_and_fit,
    open_and_paste_buttons,
    tool_button,
)
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.flow_layout import wrap_row

FIT_MODE_LABELS: dict[str, tuple[str, str]] = {
    "resize": ("Resize", "Stretch the whole image to the target size (the aspect may change)"),
    "crop": ("Crop", "Scale to cover the target size and crop what overflows, centred"),
    "fill": ("Fill", "Scale to fit inside the target size and fill the empty sides "
                     "from the image's edges"),
}


def fit_frame(mode: str, image_w: int, image_h: int, target_w: int, target_h: int) -> QRectF:
    """The target frame in *image* coordinates for a fit mode.

    ``resize``: the whole image; ``crop``: a centred rectangle of the target's aspect inside
    the image (the part kept); ``fill``: a centred rectangle of the target's aspect around the
    image (the part beyond the image is filled).
    """
    if image_w <= 0 or image_h <= 0 or target_w <= 0 or target_h <= 0 or mode == "resize":
        return QRectF(0, 0, image_w, image_h)
    sx, sy = target_w / image_w, target_h / image_h
    scale = max(sx, sy) if mode == "crop" else min(sx, sy)
    fw, fh = target_w / scale, target_h / scale
    return QRectF((image_w - fw) / 2.0, (image_h - fh) / 2.0, fw, fh)


class _SourceView(ImageViewer):
    """Viewer that also draws the target frame for the current fit mode."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode = "resize"
        self.target: tuple[int, int] | None = None

    def frame(self) -> QRectF | None:
        img = self.image()
        if img is None or self.target is None:
            return None
        return fit_frame(self.mode, img.width(), img.height(), *self.target)

    def content_rect(self) -> QRectF:
        rect = super().content_rect()
        frame = self.frame()
        return rect.united(frame) if frame is not None else rect

    def paint_image_overlay(self, painter: QPainter) -> None:
        img = self.image()
        frame = self.frame()
        if img is None or frame is None:
            return
        whole = QRectF(0, 0, img.width(), img.height())
        if self.mode == "crop":
            outside = QPainterPath()
            outside.addRect(whole)
            inner = QPainterPath()
            inner.addRect(frame)
            painter.fillPath(outside.subtracted(inner), QColor(0, 0, 0, 140))
        elif self.mode == "fill":
            beyond = QPainterPath()
            beyond.addRect(frame)
            inner = QPainterPath()
            inner.addRect(whole)
            band = beyond.subtracted(inner)
            hl = self.palette().color(QPalette.ColorRole.Highlight)
            tint = QColor(hl)
            tint.setAlpha(50)
            painter.fillPath(band, tint)
            hatch = QBrush(QColor(hl.red(), hl.green(), hl.blue(), 110),
                           Qt.BrushStyle.BDiagPattern)
            painter.save()
            painter.scale(1 / self.zoom(), 1 / self.zoom())  # hatch at screen resolution
            painter.fillPath(QTransform.fromScale(self.zoom(), self.zoom()).map(band), hatch)
            painter.restore()

    def paint_foreground(self, painter: QPainter) -> None:
        frame = self.frame()
        if frame is None or self.target is None:
            return
        r = QRectF(self.map_from_image(frame.topLeft()), self.map_from_image(frame.bottomRight()))
        hl = self.palette().color(QPalette.ColorRole.Highlight)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 3))
        painter.drawRect(r)
        pen = QPen(hl, 1.5, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawRect(r)
        w, h = self.target
        label = f"{w} × {h} · {FIT_MODE_LABELS.get(self.mode, (self.mode, ''))[0].lower()}"
        fm = QFontMetricsF(painter.font())
        pad = 6.0
        box = QRectF(0, 0, fm.horizontalAdvance(label) + 2 * pad, fm.height() + pad)
        box.moveTopLeft(QPointF(max(4.0, r.left() + 6), max(4.0, r.top() + 6)))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 170))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, label)


class SourceCanvas(ImageCanvasBase):
    """The image-to-image source: a viewer plus Open…, Paste, Clear and the fit-mode choice."""

    _what = "source image"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._view = _SourceView(self)
        self._view.set_placeholder(
            "Drop an image here, paste it with Ctrl+V,\nor click Open… to choose a file")
        self._view.setAccessibleName("Source image")

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.setSpacing(2)
        self.open_button, self.paste_button = open_and_paste_buttons(self)
        self.clear_button = tool_button(self, "remove", "Remove",
                                        "Remove the source image", with_text=True)
        self.clear_button.clicked.connect(lambda: self.set_image(None))
        for b in (self.open_button, self.paste_button, self.clear_button):
            bar.addWidget(b)
        bar.addSpacing(12)
        fit_label = QLabel("Fit:", self)
        self.fit_combo = QComboBox(self)
        for mode in RESIZE_MODES:
            text, tip = FIT_MODE_LABELS.get(mode, (mode.title(), ""))
            self.fit_combo.addItem(text, mode)
            self.fit_combo.setItemData(self.fit_combo.count() - 1, tip,
                                       Qt.ItemDataRole.ToolTipRole)
        self.fit_combo.setToolTip("How the image is fitted to the target width and height")
        self.fit_combo.setAccessibleName("Fit mode")
        fit_label.setBuddy(self.fit_combo)
        self.fit_combo.currentIndexChanged.connect(self._on_fit_combo)
        bar.addWidget(fit_label)
        bar.addWidget(self.fit_combo)
        bar.addStretch(1)
        self.info_label, self.fit_button = add_info_and_fit(
            self, bar, self._view, "Fit the image to the view (double-click, 0)")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(wrap_row(bar, self))  # wraps where the pane is narrow
        lay.addWidget(self._view, 1)
        self._view.zoomChanged.connect(lambda _z: self._update_info())
        self.clear_button.setEnabled(False)
        self._update_info()
        self.setFocusProxy(self._view)

    # ---------------------------------------------------------------- API
    @property
    def viewer(self) -> ImageViewer:
        return self._view

    def set_image(self, image: QImage | None) -> None:
        if image is not None and image.isNull():
            image = None
        self._view.set_image(image)
        self.clear_button.setEnabled(image is not None)
        self._update_info()
        self.imageChanged.emit()

    def image(self) -> QImage | None:
        return self._view.image()

    def fit_mode(self) -> str:
        return self._view.mode

    def set_fit_mode(self, mode: str) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"fit mode must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")
        self._view.mode = mode
        idx = self.fit_combo.findData(mode)
        if idx != self.fit_combo.currentIndex():
            self.fit_combo.blockSignals(True)
            self.fit_combo.setCurrentIndex(idx)
            self.fit_combo.blockSignals(False)
        self._refresh_frame()

    def set_target_size(self, w: int, h: int) -> None:
        self._view.target = (int(w), int(h)) if w > 0 and h > 0 else None
        self._refresh_frame()

    def target_size(self) -> tuple[int, int] | None:
        return self._view.target

    def target_frame(self) -> QRectF | None:
        """The target frame in image coordinates (see :func:`fit_frame`), or None."""
        return self._view.frame()

    # ---------------------------------------------------------------- internals
    def _on_fit_combo(self, index: int) -> None:
        mode = self.fit_combo.itemData(index)
        if isinstance(mode, str):
            self.set_fit_mode(mode)

    def _refresh_frame(self) -> None:
        if self._view.is_auto_fit():
            self._view.fit()
        self._view.update()
        self._update_info()

    def _update_info(self) -> None:
        img = self._view.image()
        if img is None:
            self.info_label.setText("")
            self.fit_button.setEnabled(False)
            return
        self.fit_button.setEnabled(True)
        self.info_label.setText(
            f"{img.width()} × {img.height()} px  ·  {round(self._view.zoom() * 100)} %")

    def _set_drag_hover(self, on: bool) -> None:
        super()._set_drag_hover(on)
        self._view.set_drop_highlight(on)

    def handles_key(self, event: QKeyEvent) -> bool:
        return super().handles_key(event) or event.matches(QKeySequence.StandardKey.Open)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Open):
            self.open_dialog()
            event.accept()
            return
        super().keyPressEvent(event)
