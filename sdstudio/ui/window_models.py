"""The main window's model bar: the model list (scanned folders, recent files, the demo
model), opening a model file or folder, and switching models. A mixin of
:class:`sdstudio.ui.main_window.MainWindow`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QSizePolicy, QToolBar, QWidget

from sdstudio.core.settings import Settings, model_key
from sdstudio.ui import file_dialogs
from sdstudio.ui.theme import icon
from sdstudio.ui.window_part import WindowPart
from sdstudio.worker import JobQueue

if TYPE_CHECKING:  # the manager (and its downloads window) is imported when first opened:
    from sdstudio.ui.model_manager import ModelManager  # ~45 ms less before the window shows

DEMO_LABEL = "Demo model — untrained demo (images are noise)"
MODEL_FILE_FILTER = "Stable Diffusion models (*.safetensors *.ckpt *.pt *.bin);;All files (*)"


def _standard_keys(key: QKeySequence.StandardKey, fallback: str) -> list[QKeySequence]:
    """The platform's keys for a standard action; many Linux desktops define none for
    Preferences or Quit, so fall back to the common ones there."""
    return QKeySequence.keyBindings(key) or [QKeySequence(fallback)]


class ModelChooser(WindowPart):
    """The model bar and the model the next generation uses."""

    settings: Settings
    queue: JobQueue
    _models: list[dict[str, Any]]
    _current_model: str

    model_manager: ModelManager | None

    if TYPE_CHECKING:
        from sdstudio.ui.prompt_panel import PromptPanel

        prompt_panel: PromptPanel

        def _persist(self) -> None: ...
        def open_settings(self) -> bool: ...
        def apply_settings(self, new: Settings) -> None: ...

    def _build_model_bar(self) -> None:
        window = self._qt_parent()
        bar = QToolBar("Model", window)
        bar.setObjectName("modelBar")
        bar.setMovable(False)
        bar.setIconSize(QSize(18, 18))
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        label = QLabel("  &Model ", bar)
        self.model_combo = QComboBox(bar)
        self.model_combo.setMinimumWidth(340)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.setAccessibleName("Model")
        self.model_combo.setToolTip("The model used for the next generation")
        self.model_combo.activated.connect(self._on_model_chosen)
        label.setBuddy(self.model_combo)
        bar.addWidget(label)
        bar.addWidget(self.model_combo)
        self.demo_badge = QLabel("untrained demo", bar)
        self.demo_badge.setObjectName("demoBadge")
        self.demo_badge.setToolTip("The built-in demo model is untrained: its images are noise."
                                   " Open a real Stable Diffusion model to make pictures.")
        # shown and hidden through its action: the toolbar's own layout shows a widget it
        # holds whenever it fits, whatever the widget was set to
        self.demo_badge_action = bar.addWidget(self.demo_badge)
        bar.addSeparator()
        self.open_model_file_action = QAction(icon("file"), "Open model &file…", window)
        self.open_model_file_action.setToolTip("Open a .safetensors or .ckpt checkpoint")
        self.open_model_file_action.triggered.connect(self.open_model_file)
        self.open_model_folder_action = QAction(icon("folder"), "Open model f&older…", window)
        self.open_model_folder_action.setToolTip("Open a diffusers model folder "
                                                 "(with model_index.json)")
        self.open_model_folder_action.triggered.connect(self.open_model_folder)
        self.models_action = QAction(icon("model"), "&Models…", window)
        self.models_action.setToolTip("The model manager: installed models, downloads, "
                                      "per-model defaults")
        self.models_action.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.models_action.triggered.connect(self.open_model_manager)
        bar.addAction(self.open_model_file_action)
        bar.addAction(self.open_model_folder_action)
        bar.addAction(self.models_action)
        spacer = QWidget(bar)
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.settings_action = QAction(icon("settings"), "&Settings…", window)
        self.settings_action.setShortcuts(_standard_keys(QKeySequence.StandardKey.Preferences,
                                                         "Ctrl+,"))
        self.settings_action.triggered.connect(self.open_settings)
        bar.addAction(self.settings_action)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.model_bar = bar

    def select_model(self, model: str) -> None:
        """Use ``model`` ("" = the built-in demo) from now on: load it and remember it."""
        self._current_model = model
        recent = [m for m in self.settings.ui.get("recent_models", []) if m != model]
        if model:
            recent.insert(0, model)
        ui = dict(self.settings.ui)
        ui["recent_models"] = recent[:10]
        self.settings = self.settings.replace(
            engine=self.settings.engine.replace(default_model=model), ui=ui)
        self.queue.configure(self.settings.engine)
        self.queue.load_model(model)
        self._refresh_model_combo()
        self.apply_model_defaults(model)
        self._persist()

    def apply_model_defaults(self, model: str) -> list[str]:
        """Put ``model``'s own defaults (the model manager's: size, clip skip, VAE) into
        the prompt panel; the person can change them there. The names of the fields set."""
        defaults = self.settings.model_defaults.get(model_key(model)) if model else None
        if defaults is None:
            return []
        panel = self.prompt_panel
        changed = []
        values: dict[str, object] = {"width": defaults.width, "height": defaults.height,
                                     "clip_skip": defaults.clip_skip}
        if defaults.vae:
            from sdstudio.ui.model_manager import VAE_AUTOMATIC

            values["vae"] = "" if defaults.vae == VAE_AUTOMATIC else defaults.vae
        for name, value in values.items():
            if value not in (0, None) and panel.control(name).set_value(value) is None:
                changed.append(name)
        return changed

    def open_model_manager(self) -> ModelManager:
        """The model manager (Models…), made once and kept: its downloads go on while it is
        closed."""
        manager = getattr(self, "model_manager", None)
        if manager is None:
            from sdstudio.ui.model_manager import ModelManager

            manager = ModelManager(self, self._qt_parent())
            self.model_manager = manager
        manager.show()
        manager.raise_()
        manager.activateWindow()
        return manager

    def open_model_file(self) -> None:
        path = file_dialogs.open_file(self._qt_parent(), "models", "Open a model file",
                                      MODEL_FILE_FILTER)
        if path:
            self.select_model(path)

    def open_model_folder(self) -> None:
        folder = file_dialogs.existing_dir(self._qt_parent(), "model_folders",
                                           "Open a diffusers model folder")
        if folder:
            self.select_model(folder)

    def _refresh_model_combo(self) -> None:
        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(icon("model"), DEMO_LABEL, "")
        combo.setItemData(0, "The built-in tiny model: it works offline but is untrained, so "
                             "its images are noise", Qt.ItemDataRole.ToolTipRole)
        seen = {""}
        for entry in self._models:
            path = str(entry.get("path", ""))
            if path and path not in seen:
                seen.add(path)
                combo.addItem(icon("model"), str(entry.get("name") or Path(path).name), path)
                combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        for path in [self._current_model, *self.settings.ui.get("recent_models", [])]:
            if path and path not in seen:
                seen.add(path)
                combo.addItem(icon("file" if Path(path).suffix else "folder"),
                              Path(path).name or path, path)
                combo.setItemData(combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(0, combo.findData(self._current_model)))
        combo.blockSignals(False)
        self.show_demo_badge(self._current_model == "")

    def show_demo_badge(self, visible: bool) -> None:
        self.demo_badge_action.setVisible(visible)

    def _on_model_chosen(self, index: int) -> None:
        model = str(self.model_combo.itemData(index) or "")
        if model != self._current_model or self.queue.loaded is None:
            self.select_model(model)

    def _on_models_listed(self, models: list[dict[str, Any]]) -> None:
        self._models = list(models)
        self._refresh_model_combo()
