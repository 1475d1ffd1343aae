"""The model manager (Models…): the installed models by kind, and downloads.

*Installed*: every model file of SD Studio's own folders (``core.paths.model_dir``), the
configured folders and other apps' folders (``core.other_apps``), listed on a background
thread (``worker.model_inventory``: architecture from the file's header, size, A1111's short
hash from the hash cache) with a search box and kind / architecture filters. Per row: compute
the hash (on another background thread), open the folder, remove (to the system trash, after
asking as the gallery does), use a checkpoint as the default model, and the checkpoint's own
defaults (size from its architecture, clip skip, VAE) that the window's prompt panel takes
when the model is chosen in the model bar (``Settings.model_defaults``).

*Download*: ``ui.model_manager_downloads`` (catalogue, pasted links, progress, cancel, resume,
the safe loader's check through the worker, tokens).

The dialog is not modal and stays alive with the window: closing it while something downloads
keeps the download running in the background (the status bar says so); closing the window
cancels downloads and stops every thread (:meth:`ModelManager.shutdown`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QCloseEvent, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core import other_apps
from sdstudio.core.paths import named_files, search_dirs
from sdstudio.core.settings import ModelDefaults, Settings, model_key
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.model_manager_downloads import DownloadsPanel, arch_label, size_text, tree_items
from sdstudio.ui.trash import move_to_trash
from sdstudio.ui.widgets import MessageBar, confirm
from sdstudio.worker import JobQueue
from sdstudio.worker.model_inventory import (
    KIND_LABELS,
    InstalledModel,
    compute_short_hash,
    list_installed,
    model_folders,
    preferred_size,
)

ARCH_FILTERS = (("All architectures", ""), ("SD 1.x", "sd1"), ("SD 2.x", "sd2"),
                ("SDXL", "sdxl"), ("Not known", "?"))
COLUMNS = ("Name", "Kind", "Architecture", "Size", "Hash", "Where")
VAE_UNCHANGED = ""
VAE_AUTOMATIC = "Automatic"  # ModelDefaults.vae: the model's own VAE
OTHER_APPS_BUDGET_S = 3.0
ModelRole = Qt.ItemDataRole.UserRole + 1


class ManagerHost(Protocol):
    """What the manager needs of the main window."""

    settings: Settings
    queue: JobQueue

    def apply_settings(self, new: Settings) -> None: ...

    def select_model(self, model: str) -> None: ...


def matches(model: InstalledModel, text: str, kind: str, arch: str) -> bool:
    """Whether ``model`` passes the search ``text`` (name, file, hash or folder, any case)
    and the kind / architecture filters ("" = any; arch "?" = not known)."""
    if kind and model.kind != kind:
        return False
    if arch == "?" and model.arch:
        return False
    if arch and arch != "?" and model.arch.split("-")[0] != arch:
        return False
    needle = text.strip().lower()
    if not needle:
        return True
    hay = " ".join((model.name, Path(model.path).name, model.short_hash or "", model.origin,
                    model.folder)).lower()
    return all(word in hay for word in needle.split())


def find_other_app_folders() -> list[Any]:
    """Other apps' model folders (bounded search; run on a background thread)."""
    return other_apps.find_other_apps(budget_s=OTHER_APPS_BUDGET_S).folders()


class ModelManager(QDialog):
    def __init__(self, host: ManagerHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.setObjectName("model_manager")
        self.setWindowTitle("Models")
        self.setModal(False)
        self.resize(1060, 660)
        self.models: list[InstalledModel] = []
        self._other_folders: list[Any] | None = None
        self._vae_names: list[str] = []
        self._pending = 0  # listings asked for and not delivered yet
        self._listing = BackgroundRunner("sdstudio-model-list", self)
        self._hashing = BackgroundRunner("sdstudio-model-hash", self)
        self._hashes_running: set[str] = set()
        self.listed_count = 0  # listings delivered (tests wait on it)
        #: the other-app search (tests replace it; it walks the home folder)
        self.find_other_apps: Callable[[], list[Any]] = find_other_app_folders

        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._build_installed(), "Installed")  # Ctrl+Tab switches
        self.downloads = DownloadsPanel(host, self.refresh, self.installed_names, self)
        self.tabs.addTab(self.downloads, "Download")
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        close.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(close)

    # ================================================================ building
    def _build_installed(self) -> QWidget:
        page = QWidget(self)
        self.search = QLineEdit(page)
        self.search.setPlaceholderText("Search by name, file, hash or folder")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search models")
        self.kind_filter = QComboBox(page)
        self.kind_filter.setAccessibleName("Kind")
        self.kind_filter.addItem("All kinds", "")
        for kind, label in KIND_LABELS.items():
            self.kind_filter.addItem(label, kind)
        self.arch_filter = QComboBox(page)
        self.arch_filter.setAccessibleName("Architecture")
        for label, value in ARCH_FILTERS:
            self.arch_filter.addItem(label, value)
        self.rescan_button = QPushButton("&Rescan", page)
        self.rescan_button.setToolTip("List the model folders again")
        self.rescan_button.clicked.connect(self.refresh)
        for signal in (self.search.textChanged, self.kind_filter.currentIndexChanged,
                       self.arch_filter.currentIndexChanged):
            signal.connect(self.apply_filter)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.kind_filter)
        top.addWidget(self.arch_filter)
        top.addWidget(self.rescan_button)

        self.tree = QTreeWidget(page)
        self.tree.setObjectName("installedModels")
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        self.tree.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.tree.currentItemChanged.connect(lambda *_: self._on_selection())
        self.tree.itemDoubleClicked.connect(lambda *_: self.use_as_default())

        self.count_label = QLabel("Listing…", page)
        self.path_label = QLabel("", page)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setWordWrap(True)
        self.status = MessageBar(page)

        self.hash_button = QPushButton("Compute &hash", page)
        self.hash_button.setToolTip("Read the file once to compute its sha256 (A1111's short "
                                    "hash is its first 10 digits); cached afterwards")
        self.hash_button.clicked.connect(self.compute_hash)
        self.folder_button = QPushButton("Open &folder", page)
        self.folder_button.clicked.connect(self.open_folder)
        self.remove_button = QPushButton("Re&move…", page)
        self.remove_button.setToolTip("Move the file to the system trash (asks first)")
        self.remove_button.clicked.connect(lambda: self.remove_selected())
        self.default_button = QPushButton("Use as &default model", page)
        self.default_button.setToolTip("Choose this checkpoint in the model bar; it is loaded "
                                       "at every start until another is chosen")
        self.default_button.clicked.connect(self.use_as_default)
        buttons = QHBoxLayout()
        for b in (self.hash_button, self.folder_button, self.remove_button,
                  self.default_button):
            buttons.addWidget(b)
        buttons.addStretch(1)

        layout = QVBoxLayout(page)
        layout.addLayout(top)
        body = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self.tree, 1)
        left.addWidget(self.count_label)
        left.addWidget(self.path_label)
        left.addLayout(buttons)
        body.addLayout(left, 1)
        body.addWidget(self._build_defaults(page))
        layout.addLayout(body, 1)
        layout.addWidget(self.status)
        self._on_selection()
        return page

    def _build_defaults(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("When this model is chosen", parent)
        box.setObjectName("modelDefaults")
        box.setToolTip("The prompt panel takes these when the model is chosen in the model "
                       "bar; you can still change them there")
        self.width_spin = QSpinBox(box)
        self.height_spin = QSpinBox(box)
        for spin in (self.width_spin, self.height_spin):
            spin.setRange(0, 8192)
            spin.setSingleStep(64)
            spin.setSpecialValueText("unchanged")
        self.width_spin.setAccessibleName("Default width")
        self.height_spin.setAccessibleName("Default height")
        self.size_hint_label = QLabel("", box)
        self.size_hint_label.setWordWrap(True)
        self.clip_skip_spin = QSpinBox(box)
        self.clip_skip_spin.setRange(0, 12)
        self.clip_skip_spin.setSpecialValueText("unchanged")
        self.clip_skip_spin.setAccessibleName("Default clip skip")
        self.vae_combo = QComboBox(box)
        self.vae_combo.setAccessibleName("Default VAE")
        self.save_defaults_button = QPushButton("&Save defaults", box)
        self.save_defaults_button.clicked.connect(self.save_defaults)
        self.clear_defaults_button = QPushButton("C&lear", box)
        self.clear_defaults_button.setToolTip("Forget this model's defaults")
        self.clear_defaults_button.clicked.connect(self.clear_defaults)
        form = QFormLayout(box)
        form.addRow("&Width", self.width_spin)
        form.addRow("H&eight", self.height_spin)
        form.addRow("", self.size_hint_label)
        form.addRow("Clip s&kip", self.clip_skip_spin)
        form.addRow("&VAE", self.vae_combo)
        row = QHBoxLayout()
        row.addWidget(self.save_defaults_button)
        row.addWidget(self.clear_defaults_button)
        form.addRow(row)
        box.setMinimumWidth(280)
        self.defaults_box = box
        return box

    # ================================================================ listing
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._pending:  # what changed meanwhile (a download on the command line...)
            self.refresh()
        self.downloads.on_shown()

    def refresh(self) -> None:
        """List the model folders again (on a background thread)."""
        engine = self.host.settings.engine
        known = self._other_folders
        finder = self.find_other_apps
        self.count_label.setText("Listing…")
        self._pending += 1

        def work() -> tuple[list[Any], list[InstalledModel], list[str]]:
            found = finder() if known is None else known
            vaes = [name for name, _ in named_files(search_dirs("vae", engine))]
            return found, list_installed(model_folders(engine, found)), vaes

        self._listing.submit(work, self._on_listed, self._on_list_failed)

    def _on_listed(self, result: tuple[list[Any], list[InstalledModel], list[str]]) -> None:
        self._pending -= 1
        self._other_folders, self.models, self._vae_names = result
        self._fill()
        self.listed_count += 1
        self.downloads.installed_changed()

    def _on_list_failed(self, exc: BaseException) -> None:
        self._pending -= 1
        self.count_label.setText(f"The model folders could not be listed: {exc}")

    def installed_names(self) -> set[tuple[str, str]]:
        """(kind, file name) and (kind, ``sha256:`` short hash) of every installed model (the
        catalogue marks its entries installed by either)."""
        return ({(m.kind, Path(m.path).name) for m in self.models}
                | {(m.kind, f"sha256:{m.short_hash}") for m in self.models if m.short_hash})

    def _fill(self) -> None:
        current = self.selected()
        self.tree.setSortingEnabled(False)
        self.tree.clear()
        for model in self.models:
            item = _Row([
                model.name, KIND_LABELS.get(model.kind, model.kind), arch_label(model.arch),
                size_text(model.size), model.short_hash or "", model.where])
            item.setData(0, ModelRole, model)
            item.setData(3, Qt.ItemDataRole.UserRole, model.size)
            item.setToolTip(0, model.path)
            item.setToolTip(5, model.folder)
            if model.problem:
                item.setToolTip(2, model.problem)
                item.setText(2, "not usable")
            self.tree.addTopLevelItem(item)
            if current is not None and model.path == current.path:
                self.tree.setCurrentItem(item)
        self.tree.setSortingEnabled(True)
        self.apply_filter()

    def apply_filter(self) -> None:
        text = self.search.text()
        kind = str(self.kind_filter.currentData() or "")
        arch = str(self.arch_filter.currentData() or "")
        shown = 0
        for item in tree_items(self.tree):
            model = item.data(0, ModelRole)
            hide = not matches(model, text, kind, arch)
            item.setHidden(hide)
            shown += not hide
        total = len(self.models)
        self.count_label.setText(f"{shown} of {total} models" if shown != total
                                 else f"{total} model" + ("" if total == 1 else "s"))
        self._on_selection()

    def visible_models(self) -> list[InstalledModel]:
        return [item.data(0, ModelRole) for item in tree_items(self.tree)
                if not item.isHidden()]

    def select_path(self, path: str) -> bool:
        for item in tree_items(self.tree):
            if item.data(0, ModelRole).path == path and not item.isHidden():
                self.tree.setCurrentItem(item)
                return True
        return False

    def selected(self) -> InstalledModel | None:
        item = self.tree.currentItem()
        if item is None or item.isHidden():
            return None
        model = item.data(0, ModelRole)
        return model if isinstance(model, InstalledModel) else None

    def _on_selection(self) -> None:
        model = self.selected()
        for b in (self.folder_button, self.remove_button):
            b.setEnabled(model is not None)
        self.hash_button.setEnabled(model is not None and not model.short_hash
                                    and model.path not in self._hashes_running)
        checkpoint = model is not None and model.kind == "checkpoint" and not model.problem
        self.default_button.setEnabled(checkpoint)
        self.defaults_box.setEnabled(checkpoint)
        self.path_label.setText(model.path if model is not None else "")
        self._show_defaults(model if checkpoint else None)

    # ================================================================ actions
    def compute_hash(self) -> None:
        model = self.selected()
        if model is None or model.path in self._hashes_running:
            return
        path = model.path
        self._hashes_running.add(path)
        self.hash_button.setEnabled(False)
        self.show_status(f"Computing the hash of {Path(path).name}…")

        def done(short: str) -> None:
            self._hashes_running.discard(path)
            self.models = [m if m.path != path else _with_hash(m, short) for m in self.models]
            for item in tree_items(self.tree):
                if item.data(0, ModelRole).path == path:
                    item.setData(0, ModelRole, _with_hash(item.data(0, ModelRole), short))
                    item.setText(4, short)
            self.show_status(f"{Path(path).name}: hash {short}")
            self._on_selection()

        def failed(exc: BaseException) -> None:
            self._hashes_running.discard(path)
            self.show_status(f"The hash of {Path(path).name} could not be computed: "
                             f"{getattr(exc, 'strerror', None) or exc}", error=True)
            self._on_selection()

        self._hashing.submit(lambda: compute_short_hash(path), done, failed)

    def open_folder(self) -> None:
        model = self.selected()
        if model is not None:
            target = Path(model.path)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(
                target if target.is_dir() and model.kind != "checkpoint" else target.parent)))

    def remove_selected(self, ask: bool = True) -> bool:
        """Move the selected model to the system trash, asking first (as the gallery
        does); where there is no trash, ask again before deleting a file for good."""
        model = self.selected()
        if model is None:
            return False
        path = model.path
        name = Path(path).name
        default = path == self.host.settings.engine.default_model
        note = ("\n\nIt is the model in use: the model bar switches to the demo model."
                if default else "")
        if ask and not self._ask("Remove model", f"Move {name} to the trash?\n\n{path}{note}",
                                 "Move to Trash"):
            return False
        trashed = move_to_trash(path) if os.path.lexists(path) else None
        if trashed is None and os.path.lexists(path):
            if Path(path).is_dir() or not self._ask(
                    "Remove model", f"{name} cannot be moved to a trash on this drive. Delete "
                    f"it for good? This cannot be undone.\n\n{path}", "Delete for Good"):
                if Path(path).is_dir():
                    self.show_status(f"{name} cannot be moved to a trash on this drive; "
                                     "remove the folder yourself", error=True)
                return False
            try:
                os.remove(path)
            except OSError as exc:
                self.show_status(f"Could not delete {name}: {exc.strerror}", error=True)
                return False
            self.show_status(f"Deleted {name}")
        else:
            self.show_status(f"Moved {name} to the trash")
        self.models = [m for m in self.models if m.path != path]
        self._fill()
        self.downloads.installed_changed()
        if model.kind == "checkpoint":
            if default:
                self.host.select_model("")
            self.host.queue.refresh_models()
        return True

    def _ask(self, title: str, text: str, yes_text: str) -> bool:
        return confirm(self, title, text, yes_text)  # as the gallery asks

    def use_as_default(self) -> None:
        model = self.selected()
        if model is None or model.kind != "checkpoint" or model.problem:
            return
        self.host.select_model(model.path)
        self.show_status(f"{model.name} is the default model now (the model bar shows it)")

    # ========================================================= per-model defaults
    def _show_defaults(self, model: InstalledModel | None) -> None:
        vaes = self._vae_names  # the VAE folders' names, as the panel's VAE list has them
        combo = self.vae_combo
        combo.clear()
        combo.addItem("unchanged", VAE_UNCHANGED)
        combo.addItem("Automatic (the model's own)", VAE_AUTOMATIC)
        for name in vaes:
            combo.addItem(name, name)
        if model is None:
            self.size_hint_label.setText("Choose a checkpoint to set its defaults.")
            return
        saved = self.host.settings.model_defaults.get(model_key(model.path))
        side = preferred_size(model.arch)
        if saved is None:
            self.width_spin.setValue(side)
            self.height_spin.setValue(side)
            self.clip_skip_spin.setValue(0)
        else:
            self.width_spin.setValue(saved.width)
            self.height_spin.setValue(saved.height)
            self.clip_skip_spin.setValue(saved.clip_skip)
            index = combo.findData(saved.vae)
            if index < 0:
                combo.addItem(saved.vae, saved.vae)
                index = combo.count() - 1
            combo.setCurrentIndex(index)
        what = arch_label(model.arch) if model.arch else "an unknown architecture"
        self.size_hint_label.setText(f"{what}: trained at {side}×{side}"
                                     + ("" if saved is not None else " (not saved yet)"))
        self.clear_defaults_button.setEnabled(saved is not None)

    def save_defaults(self) -> None:
        model = self.selected()
        if model is None or model.kind != "checkpoint":
            return
        defaults = ModelDefaults(width=self.width_spin.value(), height=self.height_spin.value(),
                                 clip_skip=self.clip_skip_spin.value(),
                                 vae=str(self.vae_combo.currentData() or ""))
        self._store_defaults(model_key(model.path), defaults)
        self.show_status(f"Saved the defaults of {model.name}: they apply when it is chosen "
                         "in the model bar")
        self._show_defaults(model)

    def clear_defaults(self) -> None:
        model = self.selected()
        if model is not None:
            self._store_defaults(model_key(model.path), None)
            self.show_status(f"{model.name} has no defaults of its own now")
            self._show_defaults(model)

    def _store_defaults(self, key: str, defaults: ModelDefaults | None) -> None:
        settings = self.host.settings
        table = dict(settings.model_defaults)
        if defaults is None or defaults.empty:
            table.pop(key, None)
        else:
            table[key] = defaults
        self.host.apply_settings(settings.replace(model_defaults=table))

    # ================================================================ lifecycle
    def show_status(self, text: str, error: bool = False) -> None:
        if error:
            self.status.show_error(text)
        else:
            self.status.show_info(text)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Closing the manager keeps downloads running in the background."""
        active = self.downloads.active_count()
        if active:
            parent = self.parent()
            bar = getattr(parent, "statusBar", None)
            if callable(bar):
                bar().showMessage(f"{active} download(s) continue in the background "
                                  "(Models… shows them)", 8000)
        event.accept()

    def shutdown(self) -> None:
        """Cancel downloads and stop every thread (the window closes)."""
        self.downloads.shutdown()
        self._listing.stop()
        self._hashing.stop()


class _Row(QTreeWidgetItem):
    """A model's row: sorted by size in bytes in the Size column, else by text ignoring
    case."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        tree = self.treeWidget()
        column = tree.sortColumn() if tree is not None else 0
        if column == 3:
            return int(self.data(3, Qt.ItemDataRole.UserRole) or 0) < int(
                other.data(3, Qt.ItemDataRole.UserRole) or 0)
        return self.text(column).casefold() < other.text(column).casefold()


def _with_hash(model: InstalledModel, short: str) -> InstalledModel:
    from dataclasses import replace

    return replace(model, short_hash=short)
