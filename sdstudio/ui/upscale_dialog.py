"""The "Upscale…" dialog (A1111's Extras for one image): an upscaler picker (built-ins and the
upscaler model files found) and the factor, with the size the result will have. The window
runs the upscale on its one background worker (``JobQueue.submit_upscale``); this dialog only
asks. Widgets only: no torch, no engine."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QWidget,
)

from sdstudio.core import upscalers as names
from sdstudio.core.errors import RequestError
from sdstudio.ui.upscaler_picker import UpscalerPicker


class UpscaleDialog(QDialog):
    """Ask how to upscale the image ``path`` (``size`` = its pixels). After ``exec()``
    accepted, :meth:`choice` is ``(upscaler, scale)``."""

    def __init__(self, path: str, size: tuple[int, int], models: Iterable[str],
                 parent: QWidget | None = None, *, upscaler: str = names.LANCZOS,
                 scale: float = 2.0) -> None:
        super().__init__(parent)
        self.setWindowTitle("Upscale")
        self._size = size
        form = QFormLayout(self)
        source = QLabel(f"{Path(path).name} ({size[0]}×{size[1]})")
        source.setToolTip(path)
        form.addRow("Image:", source)
        self.picker = UpscalerPicker(self, models=models)
        self.picker.setObjectName("upscaler")
        self.picker.set_value(upscaler)
        form.addRow("&Upscaler:", self.picker)
        self.scale = QDoubleSpinBox(self)
        self.scale.setObjectName("scale")
        self.scale.setRange(names.MIN_SCALE, names.MAX_SCALE)
        self.scale.setSingleStep(0.5)
        self.scale.setDecimals(2)
        self.scale.setValue(scale)
        self.scale.setSuffix("×")
        form.addRow("&Scale:", self.scale)
        self.result_size = QLabel(self)
        self.result_size.setObjectName("result_size")
        form.addRow("Result:", self.result_size)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Upscale")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.scale.valueChanged.connect(self._update)
        self._update()

    def _update(self, *_args: object) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        try:
            width, height = names.target_size(*self._size, self.scale.value())
        except RequestError as exc:
            self.result_size.setText(str(exc))
            ok.setEnabled(False)
            return
        self.result_size.setText(f"{width}×{height}")
        ok.setEnabled(True)

    def choice(self) -> tuple[str, float]:
        return self.picker.value(), float(self.scale.value())
