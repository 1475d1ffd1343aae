"""A reusable upscaler picker: the built-in upscalers, optionally the latent upscale modes (for
the hires fix), then the upscaler model files given to it, as AUTOMATIC1111 lists them.

The window learns the model names as it learns LoRA and VAE names: from the folders in its
settings, without the engine (:func:`upscaler_names`). Widgets only: no torch, no engine.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from sdstudio.core import upscalers as names
from sdstudio.core.settings import EngineSettings

NameRole = Qt.ItemDataRole.UserRole + 1


def upscaler_names(settings: EngineSettings) -> list[str]:
    """The upscaler model files in SD Studio's upscaler folder and the configured ones."""
    return [name for name, _ in names.model_files(names.upscaler_dirs(settings))]


class UpscalerPicker(QComboBox):
    """Pick an upscaler by name. :meth:`value` is the canonical name ("Lanczos", a latent
    mode, or a model file's listed name); :meth:`set_value` selects one, keeping a name that
    is not (or no longer) listed as an entry marked "(not found)" so it is never silently
    replaced. ``valueChanged(str)`` follows the selection."""

    valueChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, latent: bool = False,
                 models: Iterable[str] = ()) -> None:
        super().__init__(parent)
        self._latent = latent
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.setMinimumContentsLength(12)
        self.setToolTip("Upscaler: built-in resampling or an upscaler model (ESRGAN, ...)")
        self.currentIndexChanged.connect(lambda _i: self.valueChanged.emit(self.value()))
        self.set_models(models)

    def set_models(self, models: Iterable[str]) -> None:
        """List the built-ins (and latent modes) then ``models``; the selection is kept."""
        current = self.value() if self.count() else names.LANCZOS
        self.blockSignals(True)
        try:
            self.clear()
            for name in names.BUILTIN_UPSCALERS:
                self._add(name)
            if self._latent:
                for name in names.LATENT_UPSCALE_MODES:
                    self._add(name)
            listed = [m for m in models if m not in names.BUILTIN_UPSCALERS
                      and m not in names.LATENT_UPSCALE_MODES]
            if listed:
                self.insertSeparator(self.count())
                for name in sorted(listed, key=str.lower):
                    self._add(name)
            self._select(current)
        finally:
            self.blockSignals(False)

    def _add(self, name: str, text: str = "") -> None:
        self.addItem(text or name)
        row = self.count() - 1
        self.setItemData(row, name, NameRole)
        self.setItemData(row, names.describe(name), Qt.ItemDataRole.ToolTipRole)

    def names(self) -> list[str]:
        return [str(self.itemData(i, NameRole)) for i in range(self.count())
                if self.itemData(i, NameRole) is not None]

    def value(self) -> str:
        data = self.currentData(NameRole)
        return str(data) if data is not None else names.NONE

    def set_value(self, name: str) -> None:
        before = self.value()
        self.blockSignals(True)
        try:
            self._select(name)
        finally:
            self.blockSignals(False)
        if self.value() != before:
            self.valueChanged.emit(self.value())

    def _select(self, name: str) -> None:
        wanted = names.normalise(name)
        for i in range(self.count()):
            data = self.itemData(i, NameRole)
            if data is not None and (data == wanted or str(data).lower() == wanted.lower()):
                self.setCurrentIndex(i)
                return
        self._add(wanted, f"{wanted} (not found)")
        self.setCurrentIndex(self.count() - 1)
