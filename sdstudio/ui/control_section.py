"""The prompt panel's Control section: ControlNet, T2I-Adapter and IP-Adapter units, as
AUTOMATIC1111's ControlNet extension arranges them (one tab per unit).

**Add unit** / **Remove** (up to :data:`MAX_SECTION_UNITS`), each unit's editor
(:mod:`sdstudio.ui.control_unit`): image, scribble, preprocessor with **Preview**, model,
weight, start / end, control mode, resize mode, pixel perfect. :meth:`ControlSection.units`
is the request's ``control_units``, each image saved under ``paths.inputs_dir()`` by its
content (as the window saves init images and masks); :meth:`ControlSection.set_units` shows a
request's units (an image restored from infotext names no control image: the slot stays empty
with a note; an sdstudio chunk's saved input image is loaded back when it lies in the inputs
folder).

The section keeps the GUI thread light: listing the control models (bounded header reads)
and running a preprocessor for Preview happen on its background thread; the preview comes
back scaled to the size it is shown at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core import paths
from sdstudio.core.control import (
    ControlModel,
    ControlUnit,
    list_control_models,
    parse_units,
    units_problem,
)
from sdstudio.core.errors import SDStudioError, describe_error
from sdstudio.core.preprocessors import (
    display_image,
    pixel_perfect_resolution,
    preprocess,
)
from sdstudio.core.settings import EngineSettings
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.control_scribble import ScribbleDialog
from sdstudio.ui.control_unit import UnitEditor
from sdstudio.ui.imageutil import load_image_file, pil_to_qimage, qimage_to_pil, save_input_image

MAX_SECTION_UNITS = 4
PREVIEW_SIZE = 240  # px: the longest side of the preview shown

SourceImages = Callable[[], tuple[QImage | None, QImage | None]]  # (source image, mask)


def _no_source() -> tuple[QImage | None, QImage | None]:
    return None, None


def restorable_input(path: str | None) -> Path | None:
    """An input image a request names that lies in SD Studio's inputs folder (resolved, then
    checked to be inside it): the one kind of control image restoring loads back."""
    if not path:
        return None
    try:
        folder = paths.inputs_dir().resolve()
        target = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if folder not in target.parents or not target.is_file():
        return None
    return target


def run_preview(module: str, image: Image.Image, mask: Image.Image | None, resolution: int,
                threshold_a: float, threshold_b: float, seed: int) -> Image.Image:
    """The preprocessor's output as a person sees it, at most PREVIEW_SIZE pixels a side
    (runs on the section's background thread)."""
    out = display_image(preprocess(module, image, resolution=resolution,
                                   threshold_a=threshold_a, threshold_b=threshold_b,
                                   mask=mask, seed=seed))
    out.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.Resampling.LANCZOS)
    return out


class ControlSection(QWidget):
    """The units, as tabs. ``changed`` on every edit; ``errorOccurred`` for one-line
    problems (an image that cannot be read)."""

    changed = Signal()
    errorOccurred = Signal(str)
    modelsListed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("controlSection")
        self._runner = BackgroundRunner("sdstudio-control", self)
        self._models: list[ControlModel] = []
        self._models_listed = False  # a listing was asked for
        self._models_known = False  # one came back
        self._arch: str | None = None
        self.target_size: Callable[[], tuple[int, int]] = lambda: (512, 512)
        self.source_images: SourceImages = _no_source
        self.seed: Callable[[], int] = lambda: 0  # shuffle's, as the engine draws it
        self.engine_settings: Callable[[], EngineSettings] = EngineSettings
        self.scribble_dialog: ScribbleDialog | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        row = QHBoxLayout()
        self.summary = QLabel("No control units: add one to guide the image with a "
                              "ControlNet or an IP-Adapter", self)
        self.summary.setWordWrap(True)
        self.add_button = QPushButton("Add unit", self)
        self.add_button.setToolTip(f"Add a control unit (up to {MAX_SECTION_UNITS})")
        self.add_button.clicked.connect(self.add_unit)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Remove the unit shown")
        self.remove_button.clicked.connect(self._remove_current)
        row.addWidget(self.summary, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        lay.addLayout(row)
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        lay.addWidget(self.tabs)
        self._update()

    # =============================================================== units
    @property
    def editors(self) -> list[UnitEditor]:
        return [self.tabs.widget(i) for i in range(self.tabs.count())]  # type: ignore[misc]

    def add_unit(self) -> UnitEditor | None:
        """A new unit with the defaults (None when there are MAX_SECTION_UNITS already)."""
        if self.tabs.count() >= MAX_SECTION_UNITS:
            return None
        editor = UnitEditor(self.tabs)
        editor.set_models(self._models, self._arch)
        editor.changed.connect(self.changed)
        editor.enabledChanged.connect(lambda _on: self._update())
        editor.previewRequested.connect(lambda e=editor: self.preview(e))
        editor.paintRequested.connect(lambda e=editor: self.paint(e))
        editor.connect_refresh(self.refresh_models)
        editor.slot.errorOccurred.connect(self.errorOccurred)
        self.tabs.addTab(editor, "")
        self.tabs.setCurrentWidget(editor)
        if not self._models_listed:
            self.refresh_models()
        self._update()
        self.changed.emit()
        return editor

    def remove_unit(self, index: int) -> None:
        editor = self.tabs.widget(index)
        if editor is None:
            return
        self.tabs.removeTab(index)
        editor.deleteLater()
        self._update()
        self.changed.emit()

    def _remove_current(self) -> None:
        self.remove_unit(self.tabs.currentIndex())

    def clear_units(self) -> None:
        while self.tabs.count():
            self.remove_unit(self.tabs.count() - 1)

    def _update(self) -> None:
        editors = self.editors
        for i, editor in enumerate(editors):
            on = editor.enabled_box.isChecked()
            self.tabs.setTabText(i, f"Unit {i + 1}" + ("" if on else " (off)"))
        self.add_button.setEnabled(len(editors) < MAX_SECTION_UNITS)
        self.remove_button.setEnabled(bool(editors))
        self.tabs.setVisible(bool(editors))
        self.summary.setVisible(not editors)

    def active_count(self) -> int:
        return sum(1 for e in self.editors if e.enabled_box.isChecked())

    def units(self) -> tuple[ControlUnit, ...]:
        """The request's control units; each image written as a PNG under the inputs
        folder (named by its content). A unit switched off with no model is left out."""
        out = []
        for editor in self.editors:
            if not editor.enabled_box.isChecked() and not editor.model():
                continue  # switched off before a model was chosen: nothing to keep
            image = editor.image()
            path = str(save_input_image(image, "control")) if image is not None else None
            out.append(editor.unit(path))
        return tuple(out)

    def set_units(self, units: tuple[ControlUnit, ...], list_now: bool = True,
                  infotext: bool = False) -> list[str]:
        """Show ``units`` (replacing the section's). Notes on what could not be shown
        (``list_now``: list the models first if that has not been done, for the notes;
        ``infotext``: the units come from an infotext, which names no control images)."""
        self.clear_units()
        if units and list_now and not self._models_known:  # the notes name missing models
            self._show_models(list_control_models(self.engine_settings()))
        notes: list[str] = []
        for i, unit in enumerate(units[:MAX_SECTION_UNITS]):
            editor = self.add_unit()
            assert editor is not None
            prefix = f"control unit {i + 1}: "
            notes += [prefix + n for n in editor.set_unit(unit)]
            saved = restorable_input(unit.image)
            if saved is not None:
                try:
                    editor.set_image(load_image_file(saved), "image", saved.name)
                except SDStudioError as exc:
                    notes.append(prefix + str(exc))
            elif unit.image:
                notes.append(prefix + "its control image is not restored: drop or paste one")
            else:
                editor.use_source_box.setChecked(True)
                if infotext:
                    notes.append(prefix + "the image's parameters hold no control image: "
                                 "the unit uses the source image; drop, paste or paint one")
        if len(units) > MAX_SECTION_UNITS:
            notes.append(f"only the first {MAX_SECTION_UNITS} control units are shown")
        self._update()
        return notes

    def saved(self) -> list[dict[str, object]]:
        """The units for the window's saved state: each unit (its image as the input file
        it was saved to) and whether it uses the source image."""
        kept = [e for e in self.editors if e.enabled_box.isChecked() or e.model()]
        return [{"unit": unit.to_dict(), "use_source": editor.use_source_box.isChecked()}
                for editor, unit in zip(kept, self.units(), strict=True)]

    def restore_saved(self, value: object) -> None:
        """Put back what :meth:`saved` gave; anything malformed restores no units (the
        saved state is data: images only from the inputs folder)."""
        if not isinstance(value, list) or not value:
            return
        try:
            units = parse_units([item["unit"] for item in value if isinstance(item, dict)])
        except (ValueError, KeyError, TypeError):
            return
        if len(units) != len(value) or units_problem(units):
            return
        self.set_units(units, list_now=False)
        for editor, item in zip(self.editors, value, strict=False):
            if editor.image() is None:
                editor.use_source_box.setChecked(item.get("use_source") is True)

    # =============================================================== models
    def set_arch(self, arch: str | None) -> None:
        """The loaded checkpoint's architecture: the model pickers offer what fits it."""
        self._arch = arch
        for editor in self.editors:
            editor.set_models(self._models, arch)

    def refresh_models(self) -> None:
        """List the control models again (on the background thread)."""
        engine = self.engine_settings()
        self._models_listed = True
        self._runner.submit(lambda: list_control_models(engine), self._show_models,
                            lambda exc: self.errorOccurred.emit(
                                f"The ControlNet folders could not be listed: "
                                f"{describe_error(exc)}"))

    def _show_models(self, models: list[ControlModel]) -> None:
        self._models = list(models)
        self._models_known = True
        for editor in self.editors:
            editor.set_models(self._models, self._arch)
        self.modelsListed.emit()

    # =============================================================== preview
    def preview(self, editor: UnitEditor) -> None:
        """Run the editor's preprocessor on its image (or the source image) in the
        background and show the result under it."""
        entry = editor.preprocessor()
        image = editor.image()
        source, mask = self.source_images()
        if image is None and editor.use_source_box.isChecked():
            image = source
        if image is None:
            editor.set_preview(None, "Add an image first (or use the source image)")
            return
        unit = editor.unit(None)
        resolution = unit.processor_res
        if unit.pixel_perfect and entry.resolution:
            resolution = pixel_perfect_resolution((image.width(), image.height()),
                                                  self.target_size(), unit.resize_mode)
            resolution = max(64, min(2048, resolution))
        pil_image = qimage_to_pil(image)
        pil_mask = qimage_to_pil(mask) if mask is not None and entry.needs_mask else None
        seed = self.seed()
        if editor.preview.pixmap().isNull():  # (a preview on show stays until the new one)
            editor.set_preview(None, "Computing the preview…")

        def work() -> Image.Image:
            return run_preview(entry.name, pil_image, pil_mask, resolution, unit.threshold_a,
                               unit.threshold_b, seed)

        def shown(result: Image.Image) -> None:
            if editor in self.editors:
                editor.set_preview(pil_to_qimage(result))

        def failed(exc: BaseException) -> None:
            if editor in self.editors:
                editor.set_preview(None, describe_error(exc))

        self._runner.submit(work, shown, failed)

    # =============================================================== scribble
    def paint(self, editor: UnitEditor) -> None:
        """Open the scribble dialog for ``editor`` (at the generation's size, or the size of
        the scribble painted before)."""
        if self.scribble_dialog is not None:
            self.scribble_dialog.raise_()
            return
        existing = editor.image() if editor.image_kind == "scribble" else None
        width, height = self.target_size()
        dialog = ScribbleDialog(width, height, existing, self)
        self.scribble_dialog = dialog

        def accepted() -> None:
            scribble = dialog.scribble()
            if scribble is not None and editor in self.editors:
                editor.set_scribble(scribble)

        def finished(_result: int) -> None:
            self.scribble_dialog = None
            dialog.deleteLater()

        dialog.accepted.connect(accepted)
        dialog.finished.connect(finished)
        dialog.open()

    def shutdown(self) -> None:
        if self.scribble_dialog is not None:
            self.scribble_dialog.reject()
        self._runner.stop()
