"""The model manager's Download tab: the starter catalogue, a pasted link or Hugging Face
repository, the downloads with their progress, and the tokens.

A download runs on one background thread (``sdstudio.downloads.download``; several can be
queued, they run one at a time): first its source is resolved (a pasted repository may ask
the hub which file), then a licence that needs acceptance is shown and must be accepted, then
the file is fetched (progress: bytes, speed, time left). When it is complete the safe loader
checks it on the engine's worker thread (``JobQueue.submit_verify``; the download thread waits
for the answer) and only then is it moved into SD Studio's folder for its kind; a refused file
is deleted. Cancel keeps the partial file: Resume fetches the same source again, from where
it stopped. Offline (``HF_HUB_OFFLINE`` / ``SDSTUDIO_OFFLINE``) the tab says so at once and
starts nothing; the Installed tab works as ever.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.cancel import CancelToken
from sdstudio.core.catalogue import Catalogue, CatalogueEntry, CatalogueError, load_catalogue
from sdstudio.core.errors import CancelledError, ModelError, describe_error
from sdstudio.core.paths import MODEL_KINDS
from sdstudio.core.settings import DownloadSettings, ModelDefaults, model_key
from sdstudio.downloads import (
    DownloadError,
    DownloadProgress,
    DownloadSource,
    download,
    guess_kind,
    is_offline,
    resolve,
)
from sdstudio.downloads.types import OFFLINE_MESSAGE
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.widgets import MessageBar, confirm
from sdstudio.worker.model_inventory import KIND_LABELS, preferred_size

if TYPE_CHECKING:
    from sdstudio.ui.model_manager import ManagerHost

CATALOGUE_COLUMNS = ("Name", "Kind", "Architecture", "Size", "Licence", "")
KIND_NAMES = {**KIND_LABELS, "clip_vision": "CLIP vision", "vae_approx": "Preview decoders"}
ARCH_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "any": "any"}
EntryRole = Qt.ItemDataRole.UserRole + 1
INSTALLED_COLUMN = len(CATALOGUE_COLUMNS) - 1
OFFLINE_TEXT = f"{OFFLINE_MESSAGE[:1].upper()}{OFFLINE_MESSAGE[1:]}."
VERIFY_POLL_S = 0.1

# download states
WAITING, RESOLVING, DOWNLOADING, CHECKING, DONE, FAILED, CANCELLED = (
    "waiting", "resolving", "downloading", "checking", "done", "failed", "cancelled")
ACTIVE = (WAITING, RESOLVING, DOWNLOADING, CHECKING)


def tree_items(tree: QTreeWidget) -> list[QTreeWidgetItem]:
    """The top-level items of ``tree``, in their order."""
    items = (tree.topLevelItem(i) for i in range(tree.topLevelItemCount()))
    return [item for item in items if item is not None]


def arch_label(arch: str) -> str:
    """``sdxl-inpaint`` -> ``SDXL inpaint``; "" -> "—"."""
    if not arch:
        return "—"
    family, _, rest = arch.partition("-")
    label = ARCH_NAMES.get(family, family)
    return f"{label} {rest.replace('-', ' ')}".strip()


def is_installed(entry: CatalogueEntry, have: set[tuple[str, str]]) -> bool:
    """Whether ``have`` (see ``ModelManager.installed_names``) holds the entry's file: by
    its name, or by its sha256 when the catalogue knows it and the file's hash is cached."""
    return (entry.kind, entry.filename) in have or bool(
        entry.sha256 and (entry.kind, f"sha256:{entry.sha256[:10]}") in have)


def size_text(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1024 ** 3:
        return f"{n / 1024 ** 3:.2f} GB"
    if n >= 1024 ** 2:
        return f"{n / 1024 ** 2:.1f} MB"
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} B"


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min left"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s left"
    return f"{seconds} s left"


def progress_line(p: DownloadProgress) -> str:
    """``1.2 GB of 6.9 GB · 48.1 MB/s · 2 min 01 s left``."""
    parts = [f"{size_text(p.done)} of {size_text(p.total)}" if p.total else size_text(p.done)]
    if p.bytes_per_s > 0:
        parts.append(f"{size_text(int(p.bytes_per_s))}/s")
    if p.eta_s is not None:
        parts.append(eta_text(p.eta_s))
    return " · ".join(parts)


class _NotChecked(CancelledError):
    """The safe loader could not run (the engine is not running): the download stops as a
    cancelled one does, keeping the complete file for Resume, instead of deleting it."""


@dataclass
class DownloadItem:
    id: int
    text: str  # what was asked for: a catalogue id, a link, a repository
    kind: str | None  # None = from the catalogue or guessed from the name
    title: str
    entry: CatalogueEntry | None = None
    source: DownloadSource | None = None
    state: str = WAITING
    detail: str = ""
    progress: DownloadProgress | None = None
    licence_accepted: bool = False
    token: CancelToken = field(default_factory=CancelToken)
    path: str = ""  # where it was installed

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class DownloadRow(QFrame):
    """One download: its name, progress bar, one line of detail, Cancel and Resume."""

    def __init__(self, item: DownloadItem, panel: DownloadsPanel) -> None:
        super().__init__(panel)
        self.item_id = item.id
        self.setObjectName("downloadRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(item.title, self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.bar = QProgressBar(self)
        self.bar.setAccessibleName(f"Download of {item.title}")
        self.detail = QLabel("", self)
        self.detail.setTextFormat(Qt.TextFormat.PlainText)
        self.detail.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(lambda: panel.cancel(item.id))
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setToolTip("Download the same file again, continuing from the part "
                                      "already fetched")
        self.resume_button.clicked.connect(lambda: panel.resume(item.id))
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.cancel_button)
        top.addWidget(self.resume_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.detail)

    def show_item(self, item: DownloadItem) -> None:
        self.title.setText(item.title)
        p = item.progress
        if item.state == DOWNLOADING and p is not None and p.total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(p.done, p.total) / p.total))
            self.bar.setFormat(f"{100 * p.done / p.total:.0f} %")
        elif item.state in (WAITING, RESOLVING, CHECKING) or (
                item.state == DOWNLOADING and (p is None or not p.total)):
            self.bar.setRange(0, 0)  # busy
        else:
            self.bar.setRange(0, 1000)
            done = item.state == DONE
            self.bar.setValue(1000 if done else self.bar.value())
            self.bar.setFormat({DONE: "Installed", FAILED: "Failed",
                                CANCELLED: "Cancelled"}.get(item.state, ""))
        self.detail.setText(item.detail)
        self.cancel_button.setVisible(item.active)
        self.resume_button.setVisible(item.state in (FAILED, CANCELLED)
                                      and item.source is not None)


class DownloadsPanel(QWidget):
    """The Download tab (see the module's docstring)."""

    _progress = Signal(int, object)  # item id, DownloadProgress (from the download thread)
    _verify = Signal(int, str, object)  # item id, partial file, (Event, result dict)
    itemChanged = Signal(int)  # item id (tests and the row follow it)

    def __init__(self, host: ManagerHost, refresh_installed: Callable[[], None],
                 installed: Callable[[], set[tuple[str, str]]], parent: QWidget) -> None:
        super().__init__(parent)
        self.host = host
        self._refresh_installed = refresh_installed
        self._installed = installed
        self._ids = itertools.count(1)
        self.items: dict[int, DownloadItem] = {}
        self.rows: dict[int, DownloadRow] = {}
        self._verify_jobs: dict[int, tuple[int, threading.Event, dict[str, Any]]] = {}
        self._runner = BackgroundRunner("sdstudio-download", self)
        self._progress.connect(self._on_progress)
        self._verify.connect(self._on_verify_requested)
        self.host.queue.jobFinished.connect(self._on_job_finished)
        self.catalogue: Catalogue | None = None
        self.catalogue_problem = ""
        self._build()

    # ================================================================ building
    def _build(self) -> None:
        self.offline_bar = MessageBar(self)
        self.offline_bar.setObjectName("messageBar")
        self.offline_bar.close_button.hide()

        self.catalogue_view = QTreeWidget(self)
        self.catalogue_view.setObjectName("catalogue")
        self.catalogue_view.setHeaderLabels(list(CATALOGUE_COLUMNS))
        self.catalogue_view.setRootIsDecorated(False)
        self.catalogue_view.setAlternatingRowColors(True)
        self.catalogue_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.catalogue_view.setWordWrap(True)
        header = self.catalogue_view.header()
        for col in range(len(CATALOGUE_COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)  # the licence
        header.setStretchLastSection(False)
        self.catalogue_view.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.catalogue_view.currentItemChanged.connect(lambda *_: self._show_entry())
        self.entry_label = QLabel("", self)
        self.entry_label.setObjectName("catalogueEntry")
        self.entry_label.setWordWrap(True)
        self.entry_label.setTextFormat(Qt.TextFormat.RichText)
        self.entry_label.setOpenExternalLinks(True)
        self.entry_label.setMinimumHeight(48)
        self.entry_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.catalogue_view.itemDoubleClicked.connect(lambda *_: self.download_selected())
        self.catalogue_button = QPushButton("Download &selected", self)
        self.catalogue_button.clicked.connect(self.download_selected)
        self.licence_button = QPushButton("Read &licence", self)
        self.licence_button.clicked.connect(self.open_licence)

        self.link_edit = QLineEdit(self)
        self.link_edit.setPlaceholderText("https://huggingface.co/ORG/REPO/blob/main/FILE, "
                                          "ORG/REPO FILE, a Civitai download link or any https "
                                          "link to a model file")
        self.link_edit.setAccessibleName("Link or Hugging Face repository")
        self.link_edit.setClearButtonEnabled(True)
        self.link_edit.returnPressed.connect(self.download_link)
        self.link_edit.textChanged.connect(lambda *_: self._update_buttons())
        self.link_edit.textChanged.connect(self._show_guessed_kind)
        self.link_kind = QComboBox(self)
        self.link_kind.setAccessibleName("Kind of model")
        self.link_kind.addItem("Kind: from the name", "")
        for kind in MODEL_KINDS:
            self.link_kind.addItem(KIND_NAMES.get(kind, kind), kind)
        self.link_button = QPushButton("Do&wnload", self)
        self.link_button.clicked.connect(self.download_link)
        link_row = QHBoxLayout()
        link_row.addWidget(self.link_edit, 1)
        link_row.addWidget(self.link_kind)
        link_row.addWidget(self.link_button)

        cat_box, cv = self._column("Starter models")
        cv.addWidget(self.catalogue_view, 1)
        cv.addWidget(self.entry_label)
        cat_buttons = QHBoxLayout()
        cat_buttons.addWidget(self.catalogue_button)
        cat_buttons.addWidget(self.licence_button)
        cat_buttons.addStretch(1)
        cv.addLayout(cat_buttons)
        link_head = QLabel("Or paste a link or a Hugging Face repository", cat_box)
        link_head.setObjectName("sectionTitle")
        cv.addWidget(link_head)
        cv.addLayout(link_row)

        self.rows_box = QWidget(self)
        self.rows_layout = QVBoxLayout(self.rows_box)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.addStretch(1)
        self.no_downloads = QLabel("Nothing downloaded yet in this session.", self.rows_box)
        self.rows_layout.insertWidget(0, self.no_downloads)
        scroll = QScrollArea(self)
        scroll.setWidget(self.rows_box)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        right, rv = self._column("Downloads")
        rv.addWidget(scroll, 1)
        rv.addWidget(self._build_tokens(right))

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(cat_box)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        self.status = MessageBar(self)
        layout = QVBoxLayout(self)
        layout.addWidget(self.offline_bar)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        self._update_buttons()

    def _column(self, title: str) -> tuple[QWidget, QVBoxLayout]:
        box = QWidget(self)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        head = QLabel(title, box)
        head.setObjectName("sectionTitle")
        layout.addWidget(head)
        return box, layout

    def _build_tokens(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Tokens (for gated or private files)", parent)
        tokens = self.host.settings.downloads
        self.civitai_token = QLineEdit(tokens.civitai_token, box)
        self.hf_token = QLineEdit(tokens.hf_token, box)
        for edit, name in ((self.civitai_token, "Civitai API token"),
                           (self.hf_token, "Hugging Face token")):
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setAccessibleName(name)
            edit.setPlaceholderText("none")
        self.civitai_token.setToolTip("Sent only to civitai.com (civitai.com > Account "
                                      "settings > API keys)")
        self.hf_token.setToolTip("Sent only to Hugging Face (huggingface.co > Settings > "
                                 "Access tokens)")
        self.save_tokens_button = QPushButton("Save &tokens", box)
        self.save_tokens_button.clicked.connect(self.save_tokens)
        form = QFormLayout(box)
        form.addRow("&Civitai", self.civitai_token)
        form.addRow("&Hugging Face", self.hf_token)
        form.addRow("", self.save_tokens_button)
        return box

    # ============================================================== catalogue
    def on_shown(self) -> None:
        """The manager is shown: the catalogue once, and whether downloads are possible."""
        if self.catalogue is None and not self.catalogue_problem:
            try:
                self.catalogue = load_catalogue()
            except CatalogueError as exc:
                self.catalogue_problem = str(exc)
            self._fill_catalogue()
        self.check_offline()

    def check_offline(self) -> bool:
        offline = is_offline()
        if offline:
            self.offline_bar.show_info(f"{OFFLINE_TEXT} The installed models work as ever.")
        else:
            self.offline_bar.dismiss()
        self._update_buttons()
        return offline

    def _fill_catalogue(self) -> None:
        view = self.catalogue_view
        view.clear()
        if self.catalogue is None:
            self.show_status(f"The starter catalogue cannot be shown: {self.catalogue_problem}",
                             error=True)
            return
        for entry in self.catalogue:
            licence = entry.licence.name + (" (accept first)" if entry.licence.needs_acceptance
                                            else "")
            item = QTreeWidgetItem([entry.name, KIND_NAMES.get(entry.kind, entry.kind),
                                    arch_label(entry.architecture),
                                    size_text(entry.size), licence, ""])
            item.setData(0, EntryRole, entry)
            item.setToolTip(0, entry.description)
            item.setToolTip(4, entry.licence.url)
            view.addTopLevelItem(item)
        first = view.topLevelItem(0)
        if first is not None:
            view.setCurrentItem(first)
        self._show_entry()
        self.installed_changed()

    def installed_changed(self) -> None:
        """Mark the catalogue entries already installed."""
        have = self._installed()
        for item in tree_items(self.catalogue_view):
            entry: CatalogueEntry = item.data(0, EntryRole)
            installed = is_installed(entry, have)
            item.setText(INSTALLED_COLUMN, "✓ installed" if installed else "")
        self._update_buttons()

    def selected_entry(self) -> CatalogueEntry | None:
        item = self.catalogue_view.currentItem()
        return item.data(0, EntryRole) if item is not None else None

    def select_entry(self, entry_id: str) -> bool:
        for item in tree_items(self.catalogue_view):
            if item.data(0, EntryRole).id == entry_id:
                self.catalogue_view.setCurrentItem(item)
                return True
        return False

    def _show_entry(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            self.entry_label.setText("Choose a model to see what it is for and its licence.")
            return
        where = (f"{entry.hf_repo} · {entry.hf_file}" if entry.hf_repo else entry.url)
        accept = (" It must be accepted before the download starts."
                  if entry.licence.needs_acceptance else "")
        self.entry_label.setText(
            f"<b>{escape(entry.name)}</b> — {escape(entry.description)}<br>"
            f"Licence: <a href=\"{escape(entry.licence.url)}\">{escape(entry.licence.name)}"
            f"</a>.{accept} From {escape(where)}.")

    def open_licence(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QDesktopServices.openUrl(QUrl(entry.licence.url))

    def _show_guessed_kind(self, text: str) -> None:
        guess = KIND_NAMES.get(guess_kind(text), "") if text.strip() else ""
        self.link_kind.setItemText(0, f"Kind: from the name ({guess})" if guess
                                   else "Kind: from the name")

    def _update_buttons(self) -> None:
        offline = is_offline()
        self.catalogue_button.setEnabled(not offline and self.selected_entry() is not None)
        self.licence_button.setEnabled(self.selected_entry() is not None)
        self.link_button.setEnabled(not offline and bool(self.link_edit.text().strip()))

    # ============================================================== downloads
    def download_selected(self) -> DownloadItem | None:
        entry = self.selected_entry()
        if entry is None:
            return None
        if is_installed(entry, self._installed()) and not self._ask(
                "Download again", f"{entry.filename} is installed already. Download it again "
                "(under another name if it differs)?", "Download"):
            return None
        return self.start(entry.id, None, entry.name, entry)

    def download_link(self) -> DownloadItem | None:
        text = self.link_edit.text().strip()
        if not text:
            return None
        kind = str(self.link_kind.currentData() or "") or None
        item = self.start(text, kind, text)
        if item is not None:
            self.link_edit.clear()
        return item

    def start(self, text: str, kind: str | None, title: str,
              entry: CatalogueEntry | None = None) -> DownloadItem | None:
        """Queue a download of ``text`` (a catalogue id, a link, a repository)."""
        if self.check_offline():
            self.show_status(OFFLINE_TEXT, error=True)
            return None
        item = DownloadItem(next(self._ids), text, kind, title, entry)
        self.items[item.id] = item
        row = DownloadRow(item, self)
        self.rows[item.id] = row
        self.no_downloads.hide()
        self.rows_layout.insertWidget(self.rows_layout.count() - 1, row)
        self._resolve(item)
        return item

    def _resolve(self, item: DownloadItem) -> None:
        self._set(item, WAITING, "Waiting for the downloads before it…")
        settings = self.host.settings.downloads
        catalogue = self.catalogue
        token = item.token

        def work() -> DownloadSource:
            token.raise_if_cancelled()
            self._progress.emit(item.id, None)  # resolving now
            return resolve(item.text, kind=item.kind, settings=settings, catalogue=catalogue)

        self._runner.submit(work, lambda source: self._on_resolved(item, token, source),
                            lambda exc: self._on_failed(item, token, exc))

    def _on_resolved(self, item: DownloadItem, token: CancelToken,
                     source: DownloadSource) -> None:
        if token is not item.token:
            return
        if token.cancelled:
            self._set(item, CANCELLED, "Cancelled")
            return
        item.source = source
        item.title = source.title
        licence = source.licence
        if licence is not None and licence.needs_acceptance and not item.licence_accepted:
            if not self.ask_licence(source):
                self._set(item, CANCELLED, f"Not downloaded: the {licence.name} licence was "
                          "not accepted")
                return
            item.licence_accepted = True
        self._fetch(item)

    def ask_licence(self, source: DownloadSource) -> bool:
        """Show the licence that must be accepted; True when the person accepts it."""
        licence = source.licence
        assert licence is not None
        box = QMessageBox(QMessageBox.Icon.Information, "Licence",
                          f"{source.title} is under the {licence.name} licence, which you must "
                          f"accept before downloading it.\n\nRead it at:\n{licence.url}",
                          QMessageBox.StandardButton.Cancel, self)
        box.setObjectName("licenceBox")
        read = box.addButton("Read the licence", QMessageBox.ButtonRole.HelpRole)
        read.clicked.disconnect()
        read.clicked.connect(lambda: QDesktopServices.openUrl(QUrl(licence.url)))
        accept = box.addButton("Accept and download", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is accept

    def _fetch(self, item: DownloadItem) -> None:
        source = item.source
        assert source is not None
        item.token = token = CancelToken()
        item.progress = None
        self._set(item, WAITING, "Waiting for the downloads before it…")
        accepted = item.licence_accepted

        def progress(p: DownloadProgress) -> None:
            if not token.cancelled:
                self._progress.emit(item.id, p)

        def verify(part: Path) -> None:
            done = threading.Event()
            result: dict[str, Any] = {}
            self._verify.emit(item.id, str(part), (done, result))
            while not done.wait(VERIFY_POLL_S):
                token.raise_if_cancelled()
            if result.get("cancelled"):
                raise CancelledError("the check was cancelled; Resume checks it again")
            if result.get("unchecked"):  # the engine is not running: kept, not refused
                raise _NotChecked(f"downloaded but not checked ({result['unchecked']}); the "
                                  "file is kept: Resume checks it again")
            if result.get("error"):
                raise ModelError(str(result["error"]))

        def work() -> Path:
            token.raise_if_cancelled()
            self._progress.emit(item.id, DownloadProgress(0, source.size, 0.0, None))
            return download(source, on_progress=progress, cancel=token, verify=verify,
                            accept_licence=accepted)

        self._runner.submit(work, lambda path: self._on_done(item, token, path),
                            lambda exc: self._on_failed(item, token, exc))

    def cancel(self, item_id: int) -> None:
        item = self.items.get(item_id)
        if item is None or not item.active:
            return
        item.token.cancel()
        for job_id, (owner, _done, _result) in list(self._verify_jobs.items()):
            if owner == item_id:
                self.host.queue.cancel(job_id)
        if item.state == WAITING:  # not started: it never will
            self._set(item, CANCELLED, "Cancelled")

    def resume(self, item_id: int) -> None:
        item = self.items.get(item_id)
        if item is None or item.active or item.source is None:
            return
        if self.check_offline():
            self.show_status(OFFLINE_TEXT, error=True)
            return
        item.token = CancelToken()
        self._on_resolved(item, item.token, item.source)  # a licence not accepted: asked again

    def active_count(self) -> int:
        return sum(1 for item in self.items.values() if item.active)

    # ============================================================ from threads
    def _on_progress(self, item_id: int, p: DownloadProgress | None) -> None:
        item = self.items.get(item_id)
        if item is None or not item.active or item.token.cancelled:
            return
        if p is None:
            self._set(item, RESOLVING, "Finding the file…")
            return
        item.progress = p
        self._set(item, DOWNLOADING, progress_line(p))

    def _on_verify_requested(self, item_id: int, part: str,
                             waiter: tuple[threading.Event, dict[str, Any]]) -> None:
        item = self.items.get(item_id)
        done, result = waiter
        if item is None or item.source is None:
            result["cancelled"] = True
            done.set()
            return
        job_id = self.host.queue.submit_verify(part, item.source.kind)
        self._verify_jobs[job_id] = (item_id, done, result)
        self._set(item, CHECKING, "Checking the file with the safe loader…")

    def _on_job_finished(self, job_id: int, state: str) -> None:
        entry = self._verify_jobs.pop(job_id, None)
        if entry is None:
            return
        _item_id, done, result = entry
        if state == "done":
            pass
        elif state == "cancelled":
            result["cancelled"] = True
        else:
            job = self.host.queue.job(job_id)
            failure = job.failure if job is not None else None
            message = failure.message if failure is not None else "the check failed"
            # the check could not run at all: the file is not refused, only not checked yet
            result["unchecked" if self.host.queue.engine_ok is False else "error"] = message
        done.set()

    def _on_done(self, item: DownloadItem, token: CancelToken, path: Path) -> None:
        if token is not item.token:
            return
        item.path = str(path)
        self._set(item, DONE, f"Installed: {path}")
        self.show_status(f"{path.name} is installed in {path.parent}")
        kind = item.source.kind if item.source is not None else ""
        settings = self.host.settings
        if kind == "checkpoint" and item.entry is not None and item.entry.architecture in (
                "sd1", "sd2", "sdxl"):
            key = model_key(path.name)
            if key not in settings.model_defaults:  # the size it was trained at
                side = preferred_size(item.entry.architecture)
                table = {**settings.model_defaults, key: ModelDefaults(width=side, height=side)}
                self.host.apply_settings(settings.replace(model_defaults=table))
        if kind == "checkpoint":
            self.host.queue.refresh_models()
        elif kind == "vae":
            refresh = getattr(self.host, "refresh_addons", None)
            if callable(refresh):
                refresh()
        self._refresh_installed()

    def _on_failed(self, item: DownloadItem, token: CancelToken, exc: BaseException) -> None:
        if token is not item.token:
            return
        if isinstance(exc, _NotChecked) and not token.cancelled:
            self._set(item, FAILED, str(exc))
            self.show_status(f"{item.title}: {exc}", error=True)
            return
        if isinstance(exc, CancelledError) or token.cancelled:
            kept = item.progress.done if item.progress is not None else 0
            self._set(item, CANCELLED, "Cancelled" + (
                f": {size_text(kept)} kept, Resume continues from there" if kept else ""))
            return
        if isinstance(exc, (DownloadError, ModelError)):
            message = str(exc)
        else:
            message = describe_error(exc) if isinstance(exc, OSError) else f"{exc}"
        self._set(item, FAILED, message)
        self.show_status(f"{item.title}: {message}", error=True)

    # ================================================================ helpers
    def _set(self, item: DownloadItem, state: str, detail: str) -> None:
        item.state, item.detail = state, detail
        row = self.rows.get(item.id)
        if row is not None:
            row.show_item(item)
        self.itemChanged.emit(item.id)

    def save_tokens(self) -> None:
        settings = self.host.settings
        tokens = DownloadSettings(civitai_token=self.civitai_token.text().strip(),
                                  hf_token=self.hf_token.text().strip())
        self.host.apply_settings(settings.replace(downloads=tokens))
        self.show_status("Tokens saved")

    def show_status(self, text: str, error: bool = False) -> None:
        if error:
            self.status.show_error(text)
        else:
            self.status.show_info(text)

    def _ask(self, title: str, text: str, yes: str) -> bool:
        return confirm(self, title, text, yes, destructive=False)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel every download (their partial files stay) and stop the thread."""
        for item in self.items.values():
            item.token.cancel()
        for _job, (_item, done, result) in self._verify_jobs.items():
            result["cancelled"] = True
            done.set()
        self._verify_jobs.clear()
        deadline = time.monotonic() + timeout_s
        self._runner.stop(max(0.1, deadline - time.monotonic()))
