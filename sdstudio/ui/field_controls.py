"""A control for a request field, made from its field-table entry (``core.fields``).

Every control takes the field's whole valid range (typing any value the table allows works)
and reads and writes the field's own type. ``set_value`` never changes a value silently: a
value the control cannot show exactly (a sampler this version lacks, a VAE that is not
installed, a number outside the range) is kept where possible and described in the returned
note, for the window's restore message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QRegularExpression
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from sdstudio.core.fields import FieldSpec, num
from sdstudio.ui.upscaler_picker import UpscalerPicker

UNAVAILABLE = " (not available)"


class FieldControl:
    """The widget for one field, and how to read and write it."""

    def __init__(self, spec: FieldSpec, widget: QWidget) -> None:
        self.spec = spec
        self.widget = widget
        widget.setAccessibleName(spec.label)
        widget.setObjectName(f"field_{spec.name}")
        if spec.help:
            widget.setToolTip(spec.help[:1].upper() + spec.help[1:])

    @property
    def name(self) -> str:
        return self.spec.name

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> str | None:
        """Show ``value``; a note when it could not be shown exactly, else None."""
        raise NotImplementedError

    def on_change(self, slot: Callable[[], None]) -> None:
        raise NotImplementedError

    def _outside(self, value: Any, shown: Any) -> str:
        return (f"{self.spec.label} {value!r} is outside {num(self.spec.minimum)}–"
                f"{num(self.spec.maximum)}: {shown!r} shown")


class IntControl(FieldControl):
    widget: QSpinBox

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        spin = QSpinBox(parent)
        lo = int(spec.minimum if spec.minimum is not None else -(2**31))
        hi = int(spec.maximum if spec.maximum is not None else 2**31 - 1)
        spin.setRange(lo, min(hi, 2**31 - 1))
        ui = spec.ui
        if ui is not None and ui.step:
            spin.setSingleStep(int(ui.step))
        if ui is not None and ui.suffix:
            spin.setSuffix(ui.suffix)
        spin.setValue(int(spec.default))
        super().__init__(spec, spin)

    def value(self) -> int:
        return int(self.widget.value())

    def set_value(self, value: Any) -> str | None:
        self.widget.setValue(int(value))
        shown = self.widget.value()
        return None if shown == value else self._outside(value, shown)

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.valueChanged.connect(lambda *_: slot())


class FloatControl(FieldControl):
    widget: QDoubleSpinBox

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        spin = QDoubleSpinBox(parent)
        ui = spec.ui
        decimals = ui.decimals if ui is not None else 2
        spin.setDecimals(decimals)
        spin.setRange(spec.minimum if spec.minimum is not None else -1e9,
                      spec.maximum if spec.maximum is not None else 1e9)
        spin.setSingleStep(ui.step if ui is not None and ui.step else 10 ** -decimals)
        spin.setValue(float(spec.default))
        super().__init__(spec, spin)
        self._exact: float | None = None  # a value with more decimals than the box shows

    def value(self) -> float:
        shown = round(self.widget.value(), self.widget.decimals())
        if self._exact is not None and round(self._exact, self.widget.decimals()) == shown:
            return self._exact
        return shown

    def set_value(self, value: Any) -> str | None:
        value = float(value)
        self.widget.setValue(value)
        self._exact = value if self.widget.minimum() <= value <= self.widget.maximum() else None
        shown = self.widget.value()
        if self._exact is None:
            return self._outside(value, shown)
        return None

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.valueChanged.connect(lambda *_: slot())


class BoolControl(FieldControl):
    widget: QCheckBox

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        label = spec.ui.label if spec.ui is not None and spec.ui.label else spec.label
        box = QCheckBox(label, parent)
        box.setChecked(bool(spec.default))
        super().__init__(spec, box)

    def value(self) -> bool:
        return self.widget.isChecked()

    def set_value(self, value: Any) -> str | None:
        self.widget.setChecked(bool(value))
        return None

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.toggled.connect(lambda *_: slot())


class ChoiceControl(FieldControl):
    """A combo box of the field's choices (their labels shown). A value that is not one of
    them is added as "value (not available)" and kept, so it is written back unchanged."""

    widget: QComboBox

    def __init__(self, spec: FieldSpec, parent: QWidget,
                 entries: Sequence[tuple[str, str]] | None = None) -> None:
        combo = QComboBox(parent)
        super().__init__(spec, combo)
        labels = spec.choice_labels or spec.choices
        self.set_entries(entries if entries is not None else list(zip(labels, spec.choices,
                                                                      strict=True)))
        self.set_value(spec.default)

    def set_entries(self, entries: Sequence[tuple[str, str]]) -> None:
        """(label, value) pairs; the current value stays selected (added if it is gone)."""
        current = self.value() if self.widget.count() else self.spec.default
        combo = self.widget
        combo.blockSignals(True)
        combo.clear()
        for label, value in entries:
            combo.addItem(label, value)
        combo.blockSignals(False)
        self.set_value(current)

    def value(self) -> Any:
        data = self.widget.currentData()
        return self.spec.default if data is None else data

    def set_value(self, value: Any) -> str | None:
        combo = self.widget
        index = combo.findData(value)
        note = None
        if index < 0:
            shown = value if isinstance(value, str) else str(value)
            combo.addItem(shown + UNAVAILABLE, value)
            index = combo.count() - 1
            note = f"{self.spec.label} “{shown}” is not available here"
        combo.setCurrentIndex(index)
        return note

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.currentIndexChanged.connect(lambda *_: slot())


class SeedControl(FieldControl):
    """-1 (random) or a seed, typed."""

    widget: QLineEdit

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        edit = QLineEdit(str(spec.default), parent)
        edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"-1|\d{1,10}"), edit))
        super().__init__(spec, edit)

    def value(self) -> int:
        try:
            value = int(self.widget.text().strip())
        except ValueError:
            return int(self.spec.default)
        return value if self.spec.problem(value) is None else int(self.spec.default)

    def set_value(self, value: Any) -> str | None:
        self.widget.setText(str(value))
        return None if self.value() == value else f"{self.spec.what} {value!r} is not valid"

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.textChanged.connect(lambda *_: slot())


class LineControl(FieldControl):
    """One line of text (the hires prompts); an empty line means the field's default."""

    widget: QLineEdit

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        edit = QLineEdit(str(spec.default or ""), parent)
        edit.setPlaceholderText("the same as the first pass")
        edit.setClearButtonEnabled(True)
        super().__init__(spec, edit)

    def value(self) -> str:
        return self.widget.text()

    def set_value(self, value: Any) -> str | None:
        self.widget.setText(str(value))
        return None

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.textChanged.connect(lambda *_: slot())


class UpscalerControl(FieldControl):
    """An upscaler name in the upscaler picker (``ui.upscaler_picker``) with the latent modes
    (the hires fix's); the model files come later (:meth:`set_models`). A name that is not
    listed is kept, marked "(not found)", and described in the note."""

    widget: UpscalerPicker

    def __init__(self, spec: FieldSpec, parent: QWidget) -> None:
        picker = UpscalerPicker(parent, latent=True)
        super().__init__(spec, picker)
        picker.set_value(str(spec.default))

    def set_models(self, models: Sequence[str]) -> None:
        self.widget.set_models(models)

    def value(self) -> str:
        return self.widget.value()

    def set_value(self, value: Any) -> str | None:
        self.widget.set_value(str(value))
        if self.widget.currentText().endswith("(not found)"):  # kept, marked
            return f"{self.spec.label} “{value}” is not available here"
        return None

    def on_change(self, slot: Callable[[], None]) -> None:
        self.widget.valueChanged.connect(lambda *_: slot())


def make_control(spec: FieldSpec, parent: QWidget) -> FieldControl:
    """The control for a field from its kind (and its Ui widget hint)."""
    widget = spec.ui.widget if spec.ui is not None else ""
    if widget == "seed" or (spec.kind == "int" and spec.maximum is not None
                            and spec.maximum > 2**31 - 1):  # more than a spin box holds
        return SeedControl(spec, parent)
    if widget == "file-choice":
        return ChoiceControl(spec, parent, entries=[("Automatic", spec.default)])
    if widget == "upscaler":  # the model files come later (UpscalerControl.set_models)
        return UpscalerControl(spec, parent)
    if widget == "line":
        return LineControl(spec, parent)
    if spec.kind == "int":
        return IntControl(spec, parent)
    if spec.kind == "float":
        return FloatControl(spec, parent)
    if spec.kind == "bool":
        return BoolControl(spec, parent)
    if spec.kind == "choice":
        return ChoiceControl(spec, parent)
    raise ValueError(f"no control for {spec.name} ({spec.kind})")
