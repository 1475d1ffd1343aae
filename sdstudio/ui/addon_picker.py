"""The LoRA, embedding and VAE picker of the prompt panel.

Three tabs list the files in the LoRA, embedding and VAE folders (Settings → Models), with a
search field. A LoRA or embedding shows its preview image (one next to the file, as A1111
names them) and, once chosen, its trigger words: the activation text from A1111's notes,
the trigger phrase and the training tags in the file's metadata (each a link that inserts
it). **Insert** (or a double-click) puts ``<lora:name:1>`` (the preferred weight from A1111's
notes, and their activation text after it) or the embedding's name at the cursor of the
prompt or negative prompt; a VAE is chosen as the panel's VAE. The dialog stays open, so
several can be inserted.

Folders are walked and previews, headers and notes read in a background runner, so a slow
disk never stalls the window; everything read from a file is shown as text (escaped).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.addons import Addon, AddonDetails, list_addons, lora_tag, read_details
from sdstudio.core.paths import named_files, search_dirs
from sdstudio.core.settings import EngineSettings
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.prompt_tools import search_field
from sdstudio.ui.theme import icon
from sdstudio.ui.thumb_cache import ThumbCache

ICON = 48
PREVIEW = 192  # the chosen file's preview, beside the list
TABS = (("lora", "LoRA"), ("embedding", "Embeddings"), ("vae", "VAE"))
FOLDER_SETTING = {"lora": "LoRA", "embedding": "embedding", "vae": "VAE"}
AddonRole = Qt.ItemDataRole.UserRole + 1
TARGETS = (("prompt", "Prompt"), ("negative", "Negative prompt"))


def list_vaes(dirs: tuple[str, ...]) -> list[Addon]:
    """The VAE files as the VAE box names them (their path in the folder, no suffix)."""
    return [Addon("vae", name, path, Path(path).parent) for name, path in named_files(dirs)]


class AddonPicker(QDialog):
    """``insert(target, text)`` puts text into "prompt" or "negative"; ``use_vae(name,
    names)`` selects a VAE (``names``: every VAE found, for the panel's choices)."""

    def __init__(self, engine: EngineSettings, insert: Callable[[str, str], None],
                 use_vae: Callable[[str, list[str]], None], target: str = "prompt",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LoRA, embeddings and VAE")
        self.resize(760, 520)
        self._engine = engine
        self._insert = insert
        self._use_vae = use_vae
        self._runner = BackgroundRunner("sdstudio-addons", self)
        self._items: dict[str, list[Addon]] = {}
        self._details: dict[Path, AddonDetails] = {}
        self._icons: dict[Path, QImage] = {}
        self._thumbs = ThumbCache()  # the gallery's disk cache: safe loader, bounded
        self._no_preview = icon("file", "#9a9aa2")  # muted on both themes
        self._links: list[str] = []

        self.tabs = QTabBar(self)
        for _, title in TABS:
            self.tabs.addTab(title)
        self.tabs.setExpanding(False)
        self.search = search_field(self, "Search by name…")
        self.list = QListWidget(self)
        self.list.setAccessibleName("Files")
        self.list.setViewMode(QListView.ViewMode.ListMode)
        self.list.setIconSize(QSize(ICON, ICON))
        self.list.setUniformItemSizes(True)
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.empty_label = QLabel(self)
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.preview = QLabel(self)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.preview.setAccessibleName("Preview")
        self.title = QLabel(self)
        self.title.setObjectName("sectionTitle")
        self.title.setWordWrap(True)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.path_label = QLabel(self)
        self.path_label.setWordWrap(True)
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.words = QLabel(self)
        self.words.setWordWrap(True)
        self.words.setTextFormat(Qt.TextFormat.RichText)
        self.words.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.words.linkActivated.connect(self._link)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        self.note.setTextFormat(Qt.TextFormat.PlainText)
        self.note.setStyleSheet("color: #d0342c;")
        self.status = QLabel(self)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)

        self.target = QComboBox(self)
        for key, label in TARGETS:
            self.target.addItem(label, key)
        self.target.setCurrentIndex(max(0, self.target.findData(target)))
        self.target.setAccessibleName("Insert into")
        self.insert_button = QPushButton("&Insert", self)
        self.insert_button.setDefault(True)
        self.insert_button.clicked.connect(self.insert_current)
        close = QPushButton("Close", self)
        close.setAutoDefault(False)
        close.clicked.connect(self.reject)

        details = QVBoxLayout()
        details.addWidget(self.preview)
        details.addWidget(self.title)
        details.addWidget(self.path_label)
        details.addWidget(self.words, 1)
        details.addWidget(self.note)
        left = QVBoxLayout()
        left.addWidget(self.search)
        left.addWidget(self.list, 1)
        left.addWidget(self.empty_label)
        body = QHBoxLayout()
        body.addLayout(left, 3)
        body.addLayout(details, 2)
        self.into_label = QLabel("Into:", self)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.into_label)
        bottom.addWidget(self.target)
        bottom.addWidget(self.insert_button)
        bottom.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.tabs)
        lay.addLayout(body, 1)
        lay.addLayout(bottom)

        self.tabs.currentChanged.connect(self._show_tab)
        self.search.textChanged.connect(self._filter)
        self.list.currentItemChanged.connect(lambda *_: self._show_current())
        self.list.itemActivated.connect(lambda _item: self.insert_current())
        self._load()
        self._show_tab(0)
        self.search.setFocus()

    # ------------------------------------------------------------------ listing
    def kind(self) -> str:
        return TABS[max(0, self.tabs.currentIndex())][0]

    def _dirs(self, kind: str) -> tuple[str, ...]:
        return search_dirs(kind, self._engine)  # SD Studio's own folder, then the configured

    def _load(self) -> None:
        folders = {kind: self._dirs(kind) for kind, _ in TABS}

        def walk() -> dict[str, list[Addon]]:
            return {"lora": list_addons("lora", folders["lora"]),
                    "embedding": list_addons("embedding", folders["embedding"]),
                    "vae": list_vaes(folders["vae"])}

        self.status.setText("Looking in your folders…")
        self._runner.submit(walk, self._listed, self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"Could not list the folders: {str(exc).splitlines()[0][:200]}")

    def _listed(self, items: dict[str, list[Addon]]) -> None:
        self._items = items
        self.status.setText("")
        self._show_tab(self.tabs.currentIndex())
        previews = [a for kind in ("lora", "embedding") for a in items[kind] if a.preview]
        for addon in previews:
            assert addon.preview is not None
            self._runner.submit(functools.partial(self._thumbs.thumbnail, addon.preview, ICON),
                                functools.partial(self._set_preview, addon))

    def _set_preview(self, addon: Addon, image: QImage) -> None:
        if image.isNull():
            return
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(AddonRole) == addon:
                item.setIcon(QIcon(QPixmap.fromImage(image)))
        self._icons[addon.path] = image

    def _show_tab(self, index: int) -> None:
        kind = self.kind()
        self.list.clear()
        entries = ([Addon("vae", "", Path(), Path())] if kind == "vae" else []) + \
            self._items.get(kind, [])
        for addon in entries:
            label = addon.name or "Automatic (the model's own VAE)"
            item = QListWidgetItem(label)
            item.setData(AddonRole, addon)
            item.setToolTip(str(addon.path) if addon.name else label)
            image = self._icons.get(addon.path)
            if kind != "vae":  # a preview, or the file icon until one is read (or none)
                item.setIcon(QIcon(QPixmap.fromImage(image)) if image is not None
                             else self._no_preview)
            self.list.addItem(item)
        self.list.setIconSize(QSize(ICON, ICON) if kind != "vae" else QSize(0, 0))
        vae = kind == "vae"
        self.into_label.setVisible(not vae)
        self.target.setVisible(not vae)
        self.insert_button.setText("&Use this VAE" if vae else "&Insert")
        self._filter()

    def _filter(self) -> None:
        words = self.search.text().casefold().split()
        shown = 0
        for i in range(self.list.count()):
            item = self.list.item(i)
            hidden = not all(w in item.text().casefold() for w in words)
            item.setHidden(hidden)
            shown += not hidden
        current = self.list.currentItem()
        if current is None or current.isHidden():
            first = next((self.list.item(i) for i in range(self.list.count())
                          if not self.list.item(i).isHidden()), None)
            if first is not None:
                self.list.setCurrentItem(first)
        self._show_empty(shown)
        self._show_current()

    def _show_empty(self, shown: int) -> None:
        kind = self.kind()
        what = dict(TABS)[kind]
        if not self._items and self._runner.alive:
            text = ""
        elif not self._dirs(kind):
            text = (f"No {FOLDER_SETTING[kind]} folder is set: add one in Settings → "
                    "Models.")
        elif not self._items.get(kind):
            text = f"No {what} files in your {FOLDER_SETTING[kind]} folders."
        elif not shown:
            text = "Nothing matches the search."
        else:
            text = ""
        self.empty_label.setText(text)
        self.empty_label.setVisible(bool(text))

    # ------------------------------------------------------------------ details
    def current(self) -> Addon | None:
        item = self.list.currentItem()
        return item.data(AddonRole) if item is not None and not item.isHidden() else None

    def _show_current(self) -> None:
        addon = self.current()
        self.insert_button.setEnabled(addon is not None and (addon.kind == "vae" or
                                                             addon.insertable))
        self.words.setText("")
        self.note.setText("")
        self.preview.clear()
        self.preview.setVisible(False)
        self._links = []
        if addon is None:
            self.title.setText("")
            self.path_label.setText("")
            return
        self.title.setText(addon.name or "Automatic")
        if addon.kind == "vae":
            self.path_label.setText(str(addon.path) if addon.name else
                                    "The VAE that comes with the model.")
            return
        self.path_label.setText(str(addon.path))
        if addon.preview is not None:
            self._runner.submit(functools.partial(self._thumbs.thumbnail, addon.preview,
                                                  PREVIEW),
                                functools.partial(self._show_preview, addon))
        if not addon.insertable:
            self.note.setText("Its file name holds “:”, “<” or “>”, which a <lora:…> tag "
                              "cannot: rename the file to use it.")
        known = self._details.get(addon.path)
        if known is not None:
            self._show_details(addon, known)
        else:
            self._runner.submit(functools.partial(read_details, addon),
                                functools.partial(self._got_details, addon))

    def _show_preview(self, addon: Addon, image: QImage) -> None:
        if self.current() == addon and not image.isNull():
            self.preview.setPixmap(QPixmap.fromImage(image))
            self.preview.setVisible(True)

    def _got_details(self, addon: Addon, details: AddonDetails) -> None:
        self._details[addon.path] = details
        if self.current() == addon:
            self._show_details(addon, details)

    def _show_details(self, addon: Addon, details: AddonDetails) -> None:
        parts: list[str] = []
        self._links = []

        def link(text: str) -> str:
            self._links.append(text)
            return f'<a href="#{len(self._links) - 1}">{html.escape(text)}</a>'

        if details.activation_text:
            parts.append("<b>Activation text</b> (inserted with it): "
                         + link(details.activation_text))
        if details.preferred_weight is not None:
            parts.append(f"<b>Preferred weight</b>: {details.preferred_weight:g}")
        for label, value in details.extra.items():
            parts.append(f"<b>{html.escape(label)}</b>: "
                         + (link(value) if label == "Trigger phrase" else html.escape(value)))
        if details.tags:
            parts.append("<b>Training tags</b> (click one to insert it): " + ", ".join(
                f"{link(tag)}&nbsp;<small>({count})</small>" for tag, count in details.tags))
        if addon.kind == "lora" and not (details.activation_text or details.tags or
                                         "Trigger phrase" in details.extra):
            parts.append("No trigger words in this file's metadata.")
        self.words.setText("<br><br>".join(parts))
        if details.note:
            self.note.setText(details.note)

    def _link(self, href: str) -> None:
        try:
            text = self._links[int(href.lstrip("#"))]
        except (ValueError, IndexError):
            return
        self._insert_text(text)

    # ------------------------------------------------------------------ actions
    def snippet(self, addon: Addon) -> str:
        """What Insert puts in the prompt for ``addon``."""
        if addon.kind == "embedding":
            return addon.name
        details = self._details.get(addon.path)
        tag = lora_tag(addon.name, details.preferred_weight if details else None)
        if details is not None and details.activation_text:
            return f"{tag} {details.activation_text}"
        return tag

    def insert_current(self) -> None:
        addon = self.current()
        if addon is None:
            return
        if addon.kind == "vae":
            names = [a.name for a in self._items.get("vae", [])]
            self._use_vae(addon.name, names)
            self.status.setText(f"VAE: {addon.name or 'Automatic'}")
            return
        if not addon.insertable:
            return
        if addon.kind == "lora" and addon.path not in self._details:
            self._got_details(addon, read_details(addon))  # the weight and activation text
        self._insert_text(self.snippet(addon))

    def _insert_text(self, text: str) -> None:
        target = str(self.target.currentData())
        self._insert(target, text)
        where = dict(TARGETS)[target].lower()
        shown = text if len(text) <= 80 else text[:79] + "…"
        self.status.setText(f"Inserted {shown} into the {where}.")

    def done(self, result: int) -> None:
        self._runner.stop()
        super().done(result)
