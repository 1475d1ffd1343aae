"""One control unit's editor in the Control section (ControlNet, T2I-Adapter, IP-Adapter).

Its image slot takes a control image (or an IP-Adapter's reference image) dropped on it,
pasted (Ctrl+V while it has focus, or Paste), opened, or painted as a scribble; or the unit
uses the source image of the image-to-image / inpaint tab. Then the preprocessor (the weightless
ones of :mod:`sdstudio.core.preprocessors`; those that need weights are greyed with "use a
ready-made control image"), its thresholds and resolution, **Preview** (the preprocessor's
output, computed on the section's background thread), the model (filtered to the loaded
checkpoint's architecture and to the kind of unit), weight, guidance start and end, control
mode, resize mode and pixel perfect. :meth:`UnitEditor.unit` gives the
:class:`~sdstudio.core.control.ControlUnit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap, QResizeEvent, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.control import (
    CONTROL_MODES,
    RESIZE_MODES,
    ControlModel,
    ControlUnit,
    split_title,
)
from sdstudio.core.preprocessors import (
    DEFAULT_RESOLUTION,
    IP_ADAPTER,
    NEEDS_WEIGHTS_HINT,
    PREPROCESSOR_LIST,
    RESOLUTION_MAX,
    RESOLUTION_MIN,
    Preprocessor,
    Slider,
    find_preprocessor,
)
from sdstudio.ui.canvas.base import ImageCanvasBase, tool_button
from sdstudio.ui.theme import icon

THUMB_HEIGHT = 132
DROP_TEXT = "Drop, paste (Ctrl+V) or open an image"
USE_SOURCE_TEXT = "Uses the source image (Image to image, Inpaint)"


def arch_family(arch: str | None) -> str | None:
    """"sd1" for "sd1-inpaint", "sd2" for "sd2-v", "sdxl" for "sdxl-inpaint"."""
    return arch.split("-", 1)[0] if arch else None


def model_fits(model: ControlModel, arch: str | None, ip_adapter: bool) -> bool:
    """Whether the model picker offers ``model`` for a checkpoint of ``arch`` (None: any) and
    a unit of that kind: IP-Adapter modules take IP-Adapters, the others ControlNets and
    T2I-Adapters (a file whose kind or architecture the header does not tell is offered)."""
    if ip_adapter != (model.kind == "ip-adapter") and model.kind != "unknown":
        return False
    family = arch_family(arch)
    return family is None or model.arch is None or model.arch == family


class ImageSlot(ImageCanvasBase):
    """The unit's image: a thumbnail; drop, paste (Ctrl+V) or open an image onto it."""

    _what = "control image"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._placeholder = DROP_TEXT
        self.label = QLabel(self)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setObjectName("controlImageSlot")
        # fixed heights, no word wrap: a tab page does not pass height-for-width on
        self.setFixedHeight(THUMB_HEIGHT)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.label.setStyleSheet("#controlImageSlot { border: 1px dashed palette(mid); "
                                 "border-radius: 4px; }")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAccessibleName("Control image")
        self._show()

    def set_image(self, image: QImage | None) -> None:
        self._image = None if image is None or image.isNull() else image
        self._show()
        self.imageChanged.emit()

    def image(self) -> QImage | None:
        return self._image

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self._show()

    def mousePressEvent(self, event: Any) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().mousePressEvent(event)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._show()

    def _show(self) -> None:
        if self._image is None:
            self.label.setPixmap(QPixmap())
            self.label.setText(self._placeholder)
            return
        size = QSize(max(32, self.label.width() - 8), THUMB_HEIGHT - 8)
        self.label.setPixmap(QPixmap.fromImage(self._image).scaled(
            size, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))


class SliderSpin(QWidget):
    """A slider with a spin box beside it, for one number (weight, guidance start / end)."""

    valueChanged = Signal(float)

    def __init__(self, lo: float, hi: float, step: float, value: float, name: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scale = round(1 / step)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(round(lo * self._scale), round(hi * self._scale))
        self.slider.setAccessibleName(name)
        self.spin = QDoubleSpinBox(self)
        self.spin.setRange(lo, hi)
        self.spin.setSingleStep(step)
        self.spin.setDecimals(2)
        self.spin.setAccessibleName(name)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)
        self.slider.valueChanged.connect(lambda v: self.spin.setValue(v / self._scale))
        self.spin.valueChanged.connect(self._spun)
        self.set_value(value)

    def value(self) -> float:
        return round(self.spin.value(), 2)

    def set_value(self, value: float) -> None:
        self.spin.setValue(float(value))

    def _spun(self, value: float) -> None:
        was = self.slider.blockSignals(True)
        self.slider.setValue(round(value * self._scale))
        self.slider.blockSignals(was)
        self.valueChanged.emit(round(value, 2))


class UnitEditor(QWidget):
    """The controls of one unit. ``changed`` on every edit; ``previewRequested`` asks the
    section to compute the preprocessor's output; ``paintRequested`` asks it for the
    scribble dialog."""

    changed = Signal()
    previewRequested = Signal()
    paintRequested = Signal()
    enabledChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._models: list[ControlModel] = []
        self._arch: str | None = None
        self.image_kind = ""  # "" | "image" | "scribble": how the slot's image came
        # a preview on show follows its thresholds and resolution (after a short pause)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(300)
        self._preview_timer.timeout.connect(self.previewRequested)
        self.image_name = ""  # the file it came from, for the tooltip

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 6, 4, 4)
        lay.setSpacing(6)

        top = QHBoxLayout()
        self.enabled_box = QCheckBox("Enable", self)
        self.enabled_box.setChecked(True)
        self.enabled_box.setToolTip("Use this unit in the next generation")
        self.enabled_box.toggled.connect(self.enabledChanged)
        self.enabled_box.toggled.connect(self.changed)
        top.addWidget(self.enabled_box)
        top.addStretch(1)
        self.use_source_box = QCheckBox("Use the source image", self)
        self.use_source_box.setToolTip("Use the source image of the Image to image or "
                                       "Inpaint tab instead of an image of its own")
        self.use_source_box.toggled.connect(self._use_source_toggled)
        top.addWidget(self.use_source_box)
        lay.addLayout(top)

        self.slot = ImageSlot(self)
        self.slot.imageChanged.connect(self._image_changed)
        lay.addWidget(self.slot)
        tools = QHBoxLayout()
        tools.setSpacing(2)
        self.open_button = tool_button(self, "open", "Open…", "Open a control image",
                                       with_text=True)
        self.open_button.clicked.connect(self.slot.open_dialog)
        self.paste_button = tool_button(self, "paste", "Paste",
                                        "Paste an image from the clipboard", with_text=True)
        self.paste_button.clicked.connect(self.slot.paste)
        self.paint_button = tool_button(self, "brush", "Paint…",
                                        "Paint a scribble (white lines on black), used as "
                                        "it is", with_text=True)
        self.paint_button.clicked.connect(self.paintRequested)
        self.clear_button = tool_button(self, "clear-mask", "Clear", "Remove the image")
        self.clear_button.clicked.connect(self.clear_image)
        for b in (self.open_button, self.paste_button, self.paint_button, self.clear_button):
            tools.addWidget(b)
        tools.addStretch(1)
        lay.addLayout(tools)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setVerticalSpacing(6)
        self.form = form
        self.module_combo = QComboBox(self)
        self.module_combo.setAccessibleName("Preprocessor")
        self.module_combo.setModel(self._module_model())
        self.module_combo.currentIndexChanged.connect(self._module_changed)
        self.preview_button = QToolButton(self)
        self.preview_button.setText("Preview")
        self.preview_button.setToolTip("Show what the preprocessor makes of the image")
        self.preview_button.clicked.connect(self.previewRequested)
        row = QHBoxLayout()
        row.addWidget(self.module_combo, 1)
        row.addWidget(self.preview_button)
        form.addRow("Preprocessor", row)

        self.threshold_spins: list[QDoubleSpinBox] = []
        self.threshold_labels: list[QLabel] = []
        for name in ("Threshold A", "Threshold B"):
            spin = QDoubleSpinBox(self)
            spin.setAccessibleName(name)
            spin.valueChanged.connect(self.changed)
            spin.valueChanged.connect(self._refresh_preview)
            label = QLabel(name, self)
            label.setBuddy(spin)
            form.addRow(label, spin)
            self.threshold_spins.append(spin)
            self.threshold_labels.append(label)
        self.res_spin = QSpinBox(self)
        self.res_spin.setRange(RESOLUTION_MIN, RESOLUTION_MAX)
        self.res_spin.setSingleStep(8)
        self.res_spin.setValue(DEFAULT_RESOLUTION)
        self.res_spin.setSuffix(" px")
        self.res_spin.setAccessibleName("Preprocessor resolution")
        self.res_spin.setToolTip("The short side the preprocessor works at")
        self.res_spin.valueChanged.connect(self.changed)
        self.res_spin.valueChanged.connect(self._refresh_preview)
        self.pixel_perfect_box = QCheckBox("Pixel perfect", self)
        self.pixel_perfect_box.setToolTip("Work at the resolution the image is resized to "
                                          "for the generation")
        self.pixel_perfect_box.toggled.connect(self._pixel_perfect_toggled)
        res_row = QHBoxLayout()
        res_row.addWidget(self.res_spin, 1)
        res_row.addWidget(self.pixel_perfect_box)
        self.res_label = QLabel("Resolution", self)
        self.res_label.setBuddy(self.res_spin)
        form.addRow(self.res_label, res_row)

        self.preview = QLabel(self)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.preview.setAccessibleName("Preprocessor preview")
        self.preview.hide()
        form.addRow(self.preview)

        self.model_combo = QComboBox(self)
        self.model_combo.setAccessibleName("Control model")
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.currentIndexChanged.connect(self.changed)
        self.refresh_button = QToolButton(self)
        self.refresh_button.setIcon(icon("refresh"))
        self.refresh_button.setAutoRaise(True)
        self.refresh_button.setAccessibleName("Refresh models")
        self.refresh_button.setToolTip("List the control models in the ControlNet folders "
                                       "again")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        form.addRow("Model", model_row)

        self.weight = SliderSpin(0.0, 2.0, 0.05, 1.0, "Control weight", self)
        self.start = SliderSpin(0.0, 1.0, 0.01, 0.0, "Starting control step", self)
        self.end = SliderSpin(0.0, 1.0, 0.01, 1.0, "Ending control step", self)
        self.start.setToolTip("The fraction of the steps at which the unit starts guiding")
        self.end.setToolTip("The fraction of the steps after which it stops")
        for widget, text in ((self.weight, "Weight"), (self.start, "Start"),
                             (self.end, "End")):
            widget.valueChanged.connect(self.changed)
            form.addRow(text, widget)
        self.start.valueChanged.connect(
            lambda v: self.end.set_value(v) if v > self.end.value() else None)
        self.end.valueChanged.connect(
            lambda v: self.start.set_value(v) if v < self.start.value() else None)
        self.control_mode = QComboBox(self)
        self.control_mode.addItems(CONTROL_MODES)
        self.control_mode.setAccessibleName("Control mode")
        self.resize_mode = QComboBox(self)
        self.resize_mode.addItems(RESIZE_MODES)
        self.resize_mode.setCurrentText("Crop and Resize")
        self.resize_mode.setAccessibleName("Resize mode")
        self.resize_mode.setToolTip("How the control image is fitted to the generation's size")
        for combo, text in ((self.control_mode, "Control mode"),
                            (self.resize_mode, "Resize")):
            combo.currentIndexChanged.connect(self.changed)
            form.addRow(text, combo)
        lay.addLayout(form)
        self._module_changed()
        self._update_tools()

    # =============================================================== preprocessors
    @staticmethod
    def _module_model() -> QStandardItemModel:
        """none, the weightless preprocessors, the IP-Adapter modules, then (greyed) those
        that need weights."""
        model = QStandardItemModel()
        order = sorted(PREPROCESSOR_LIST, key=lambda p: (
            p.name != "none", p.needs_weights, p.kind == IP_ADAPTER))
        for entry in order:
            item = QStandardItem(entry.label)
            item.setData(entry.name, Qt.ItemDataRole.UserRole)
            if entry.needs_weights:
                item.setEnabled(False)
                item.setToolTip(f"{entry.name} needs model weights: {NEEDS_WEIGHTS_HINT}")
            elif entry.kind == IP_ADAPTER:
                item.setToolTip("IP-Adapter: the image is a prompt (a reference image), "
                                "encoded as it is")
            model.appendRow(item)
        return model

    def preprocessor(self) -> Preprocessor:
        entry = find_preprocessor(str(self.module_combo.currentData() or "none"))
        assert entry is not None
        return entry

    def set_module(self, name: str) -> None:
        index = self.module_combo.findData(name)
        if index >= 0:
            self.module_combo.setCurrentIndex(index)

    def _module_changed(self, *_: object) -> None:
        entry = self.preprocessor()
        for spin, label, slider in zip(self.threshold_spins, self.threshold_labels,
                                       (entry.threshold_a, entry.threshold_b), strict=True):
            shown = slider is not None
            spin.setVisible(shown)
            label.setVisible(shown)
            if slider is not None:
                _set_slider(spin, label, slider)
        self.res_spin.setVisible(entry.resolution)
        self.res_label.setVisible(entry.resolution)
        self.pixel_perfect_box.setVisible(entry.resolution)
        self.preview_button.setEnabled(entry.runnable)
        ip = entry.kind == IP_ADAPTER
        self.control_mode.setEnabled(not ip)  # the extension has none for IP-Adapters
        self.set_preview(None)
        self._fill_models(follow_module=True)
        self.changed.emit()

    def _pixel_perfect_toggled(self, on: bool) -> None:
        self.res_spin.setEnabled(not on)
        self._refresh_preview()
        self.changed.emit()

    def _refresh_preview(self, *_: object) -> None:
        """A shown preview is computed again for the new settings."""
        if not self.preview.isHidden() and self.preprocessor().runnable:
            self._preview_timer.start()

    # =============================================================== image
    def _use_source_toggled(self, on: bool) -> None:
        self.slot.set_placeholder(USE_SOURCE_TEXT if on else DROP_TEXT)
        if on:
            self.slot.set_image(None)
        self._update_tools()
        self.changed.emit()

    def _image_changed(self) -> None:
        if self.slot.image() is not None:
            if not self.image_kind:
                self.image_kind = "image"
            if self.use_source_box.isChecked():
                self.use_source_box.setChecked(False)
        else:
            self.image_kind = ""
            self.image_name = ""
        self.set_preview(None)
        self._update_tools()
        self.changed.emit()

    def set_image(self, image: QImage | None, kind: str = "image", name: str = "") -> None:
        self.image_kind = kind if image is not None else ""
        self.image_name = name
        self.slot.set_image(image)
        self.slot.setToolTip(name)

    def set_scribble(self, scribble: QImage) -> None:
        """Use a painted scribble as the image: as it is (preprocessor none)."""
        self.set_image(scribble, "scribble")
        self.set_module("none")

    def clear_image(self) -> None:
        self.set_image(None)

    def image(self) -> QImage | None:
        return self.slot.image()

    def _update_tools(self) -> None:
        has = self.slot.image() is not None
        self.clear_button.setEnabled(has)
        self.paint_button.setText("Paint…" if self.image_kind != "scribble" else
                                  "Go on painting…")

    # =============================================================== preview
    def set_preview(self, image: QImage | None, message: str = "") -> None:
        """Show the preprocessor's output (``image``), a message, or nothing."""
        if image is None and not message:
            self._preview_timer.stop()
            self.preview.clear()
            self.preview.hide()
            return
        if image is not None:
            self.preview.setPixmap(QPixmap.fromImage(image))
            self.preview.setFixedHeight(image.height() + 4)
        else:
            self.preview.setPixmap(QPixmap())
            self.preview.setText(message)
            self.preview.setToolTip(message)
            self.preview.setFixedHeight(self.preview.fontMetrics().height() + 8)
        self.preview.show()

    # =============================================================== models
    def set_models(self, models: list[ControlModel], arch: str | None) -> None:
        """The control models found, and the loaded checkpoint's architecture."""
        self._models = list(models)
        self._arch = arch
        self._fill_models()

    def _fill_models(self, follow_module: bool = False) -> None:
        """The models that fit, the chosen one kept while it fits; else (and when the
        preprocessor changes, ``follow_module``) the first whose name goes with the
        preprocessor (its file-name words: "canny", "scribble" ...), else the first."""
        current = self.model()
        ip = self.preprocessor().kind == IP_ADAPTER
        fitting = [m for m in self._models if model_fits(m, self._arch, ip)]
        was = self.model_combo.blockSignals(True)
        self.model_combo.clear()
        if not fitting:
            self.model_combo.addItem("No fitting model in the ControlNet folders", "")
        for m in fitting:
            self.model_combo.addItem(m.name, m.name)
            index = self.model_combo.count() - 1
            arch = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}.get(m.arch or "",
                                                                          "architecture ?")
            self.model_combo.setItemData(index, f"{m.kind}, {arch}: {m.path}",
                                         Qt.ItemDataRole.ToolTipRole)
        # the model chosen stays while it fits; else the first that does
        index = self._model_index(current) if current else -1
        words = self.preprocessor().model_filters
        if words and (follow_module or index < 0) and not (
                index >= 0 and _named_for(fitting[index].name, words)):
            index = next((i for i, m in enumerate(fitting) if _named_for(m.name, words)),
                         index)
        self.model_combo.setCurrentIndex(max(0, index))
        self.model_combo.blockSignals(was)
        self.model_combo.setEnabled(bool(fitting))

    def model(self) -> str:
        return str(self.model_combo.currentData() or "")

    def set_model(self, name: str) -> str | None:
        """Select the model ``name`` (a ``[hash]`` after it, as infotext writes it, and case
        ignored; the file name alone when one listed model has it); a note when no listed
        model fits (the name is kept, marked)."""
        if not name:
            return None
        index = self._model_index(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
            return None
        if self.model_combo.count() == 1 and not self.model_combo.itemData(0):
            self.model_combo.clear()
        self.model_combo.addItem(f"{name} (not found)", name)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)
        self.model_combo.setEnabled(True)
        return f"control model “{name}” is not in the ControlNet folders (or does not fit " \
               "the loaded model)"

    def _model_index(self, wanted: str) -> int:
        plain = split_title(wanted)[0].replace("\\", "/").lower()
        names = [str(self.model_combo.itemData(i) or "") for i in range(self.model_combo.count())]
        for i, listed in enumerate(names):
            if listed == wanted or (listed and listed.lower() == plain):
                return i
        stems = [i for i, listed in enumerate(names)
                 if listed and listed.rsplit("/", 1)[-1].lower() == plain]
        return stems[0] if len(stems) == 1 else -1

    # =============================================================== the unit
    def unit(self, image: str | None) -> ControlUnit:
        """The unit these controls describe, with ``image`` as its image file (None: the
        source image)."""
        entry = self.preprocessor()
        a, b = (spin.value() if slider is not None else -1.0 for spin, slider in zip(
            self.threshold_spins, (entry.threshold_a, entry.threshold_b), strict=True))
        return ControlUnit(
            model=self.model(), image=image, module=entry.name, weight=self.weight.value(),
            guidance_start=self.start.value(), guidance_end=self.end.value(),
            control_mode=self.control_mode.currentText(),
            resize_mode=self.resize_mode.currentText(),
            pixel_perfect=self.pixel_perfect_box.isChecked(),
            processor_res=self.res_spin.value(), threshold_a=a, threshold_b=b,
            enabled=self.enabled_box.isChecked())

    def set_unit(self, unit: ControlUnit) -> list[str]:
        """Show ``unit``'s settings (not its image: the section does that). Notes on what
        could not be shown."""
        notes: list[str] = []
        entry = find_preprocessor(unit.module)
        if entry is None or entry.needs_weights:
            notes.append(f"preprocessor {unit.module} is not available here: "
                         f"{NEEDS_WEIGHTS_HINT}")
            entry = find_preprocessor("none")
            assert entry is not None
        self.set_module(entry.name)
        for spin, value, slider in zip(self.threshold_spins,
                                       (unit.threshold_a, unit.threshold_b),
                                       (entry.threshold_a, entry.threshold_b), strict=True):
            if slider is not None and value >= 0:
                spin.setValue(value)
        self.res_spin.setValue(unit.processor_res if unit.processor_res > 0
                               else DEFAULT_RESOLUTION)
        self.pixel_perfect_box.setChecked(unit.pixel_perfect)
        self.weight.set_value(unit.weight)
        self.end.set_value(unit.guidance_end)
        self.start.set_value(unit.guidance_start)
        self.control_mode.setCurrentText(unit.control_mode)
        self.resize_mode.setCurrentText(unit.resize_mode)
        self.enabled_box.setChecked(unit.enabled)
        note = self.set_model(unit.model)
        if note:
            notes.append(note)
        return notes

    def connect_refresh(self, slot: Callable[[], None]) -> None:
        self.refresh_button.clicked.connect(slot)


def _named_for(name: str, words: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(w in lowered for w in words)


def _set_slider(spin: QDoubleSpinBox, label: QLabel, slider: Slider) -> None:
    was = spin.blockSignals(True)
    spin.setDecimals(0 if float(slider.step).is_integer() else
                     max(1, len(f"{slider.step:g}".split(".")[-1])))
    spin.setRange(slider.minimum, slider.maximum)
    spin.setSingleStep(slider.step)
    spin.setValue(slider.default)
    spin.blockSignals(was)
    label.setText(slider.label)
    spin.setAccessibleName(slider.label)
