"""The gallery: thumbnails of this session's images and of earlier ones in the output folder.

Earlier images are listed and thumbnailed in a background runner, a few at a time, so a
folder of thousands of PNGs never stalls the window. Clicking a thumbnail shows it large with
its parameters; the actions send it to img2img / inpaint, restore its parameters, copy it,
open its folder or move it to the system trash (after confirmation; Ctrl+Z brings the last one
back).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    QUrl,
    Signal,
    SignalInstance,
)
from PySide6.QtGui import (
    QDesktopServices,
    QIcon,
    QImage,
    QImageReader,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPalette,
    QPen,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.flow_layout import FlowLayout
from sdstudio.ui.theme import icon
from sdstudio.ui.trash import move_to_trash, restore_from_trash

THUMB = 150
PathRole = Qt.ItemDataRole.UserRole + 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_LISTED = 2000
BATCH = 12


def read_thumbnail(path: str, side: int = THUMB) -> QImage:
    """A thumbnail, decoded at reduced size where the format allows (runs off the GUI thread)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and (size.width() > side or size.height() > side):
        reader.setScaledSize(size.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return image
    if image.width() > side or image.height() > side:
        image = image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
    return image


def read_thumbnails(paths: list[str]) -> list[tuple[str, QImage]]:
    """(path, thumbnail) for each of ``paths``, in order (runs off the GUI thread)."""
    return [(p, read_thumbnail(p)) for p in paths]


def list_images(folder: Path) -> list[str]:
    """Image files in ``folder`` and one level of sub-folders, newest first."""
    found: list[tuple[float, str]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.is_dir() and not entry.name.startswith("."):
                for sub in os.scandir(entry.path):
                    if sub.is_file() and sub.name.lower().endswith(IMAGE_SUFFIXES) \
                            and not sub.name.startswith("."):
                        found.append((sub.stat().st_mtime, sub.path))
            elif entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES) \
                    and not entry.name.startswith("."):
                found.append((entry.stat().st_mtime, entry.path))
        except OSError:
            continue
    found.sort(reverse=True)
    return [p for _, p in found[:MAX_LISTED]]


def describe(path: str) -> str:
    """A short text of an image's generation parameters (runs off the GUI thread)."""
    from sdstudio.storage.png import read_image_metadata

    try:
        meta = read_image_metadata(path)
    except Exception as exc:  # no metadata is normal for foreign images
        return f"No generation parameters ({exc})"
    return meta.infotext


class ThumbnailDelegate(QStyledItemDelegate):
    """A thumbnail centred in its cell, with a rounded highlight when selected or hovered."""

    def sizeHint(self, option: QStyleOptionViewItem,
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(THUMB + 12, THUMB + 12)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = option.rect.adjusted(2, 2, -2, -2)
        pal = option.palette
        if option.state & QStyle.StateFlag.State_Selected:
            painter.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), 3))
            painter.setBrush(pal.color(QPalette.ColorRole.Highlight).lighter(170))
            painter.drawRoundedRect(rect, 6, 6)
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(pal.color(QPalette.ColorRole.Midlight))
            painter.drawRoundedRect(rect, 6, 6)
        ic = index.data(Qt.ItemDataRole.DecorationRole)
        inner = rect.adjusted(4, 4, -4, -4)
        if isinstance(ic, QIcon) and not ic.isNull():
            pm = ic.pixmap(inner.size())
            size = pm.deviceIndependentSize().toSize().scaled(
                inner.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x = inner.x() + (inner.width() - size.width()) // 2
            y = inner.y() + (inner.height() - size.height()) // 2
            painter.drawPixmap(QRect(x, y, size.width(), size.height()), pm)
        else:
            painter.setPen(pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text))
            painter.drawText(inner, int(Qt.AlignmentFlag.AlignCenter), "…")
        if option.state & QStyle.StateFlag.State_HasFocus:
            painter.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), 1,
                                Qt.PenStyle.DotLine))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 5, 5)
        painter.restore()


class GalleryWidget(QWidget):
    sendToImg2img = Signal(str)
    sendToInpaint = Signal(str)
    reuseParameters = Signal(str)
    message = Signal(str, str)  # kind ("info"/"error"), text

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runner = BackgroundRunner("sdstudio-gallery", self)
        self._known: set[str] = set()
        self._full_cache: OrderedDict[str, QImage] = OrderedDict()
        self._folder: Path | None = None
        self._pending_paths: list[str] = []

        self.list = QListWidget(self)
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setGridSize(QSize(THUMB + 16, THUMB + 16))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setSpacing(2)
        self.list.setWordWrap(False)
        self.list.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.list.setAccessibleName("Gallery thumbnails")
        self.list.setItemDelegate(ThumbnailDelegate(self.list))
        self.list.setMouseTracking(True)
        self.list.currentItemChanged.connect(self._on_current)

        self.empty_label = QLabel("Images you generate appear here.\nEarlier images from the "
                                  "output folder are listed too.", self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)

        self.viewer = ImageViewer(self)
        self.viewer.set_placeholder("Select an image")
        self.list.itemActivated.connect(lambda _item: self.viewer.setFocus())
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.info.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.info.setMaximumHeight(110)
        self.path_label = QLabel(self)
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)

        self.img2img_button = self._button("img2img", "To &image to image",
                                           "Use this image as the image-to-image source")
        self.inpaint_button = self._button("inpaint", "To i&npaint",
                                           "Use this image as the inpaint source")
        self.reuse_button = self._button("restore", "&Reuse parameters",
                                         "Restore the prompt and settings this image was made "
                                         "with")
        self.copy_button = self._button("copy", "Cop&y", "Copy the image to the clipboard")
        self.folder_button = self._button("folder", "Open &folder",
                                          "Show the image in its folder")
        self.delete_button = self._button("delete", "&Delete…",
                                          "Move this image file to the trash (asks first)")
        self.undo_button = self._button("restore", "&Undo delete",
                                        "Bring the last deleted image back from the trash")
        self.undo_button.clicked.connect(lambda: self.undo_delete())
        # Ctrl+Z while the gallery has the focus (the canvases and text boxes keep their own)
        undo = QShortcut(QKeySequence(QKeySequence.StandardKey.Undo), self)
        undo.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        undo.activated.connect(self.undo_delete)
        self._last_deleted: tuple[str, str] | None = None  # (original path, path in trash)
        self.img2img_button.clicked.connect(lambda: self._emit_path(self.sendToImg2img))
        self.inpaint_button.clicked.connect(lambda: self._emit_path(self.sendToInpaint))
        self.reuse_button.clicked.connect(lambda: self._emit_path(self.reuseParameters))
        self.copy_button.clicked.connect(self.copy_current)
        self.folder_button.clicked.connect(self.open_folder)
        # a lambda: clicked(bool checked) would otherwise arrive as confirm=False
        self.delete_button.clicked.connect(lambda: self.delete_current())
        # Delete in the thumbnail list or on the image (not window-wide: text boxes keep it)
        self.list.installEventFilter(self)
        self.viewer.installEventFilter(self)

        left = QWidget(self)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.list, 1)
        lv.addWidget(self.empty_label, 1)

        right = QWidget(self)
        rv = QVBoxLayout(right)
        rv.setContentsMargins(6, 0, 0, 0)
        rv.addWidget(self.viewer, 1)
        rv.addWidget(self.path_label)
        rv.addWidget(self.info)
        actions = FlowLayout(spacing=4, line_spacing=4)  # wraps where the pane is narrow
        for b in (self.img2img_button, self.inpaint_button, self.reuse_button,
                  self.copy_button, self.folder_button, self.delete_button, self.undo_button):
            actions.addWidget(b)
        rv.addLayout(actions)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([520, 520])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(splitter)
        self._update_state()

    def _button(self, icon_name: str, text: str, tip: str) -> QPushButton:
        b = QPushButton(icon(icon_name), text, self)
        b.setToolTip(tip)
        return b

    # =================================================================== API
    def load_folder(self, folder: Path) -> None:
        """List ``folder`` in the background, then thumbnail its images a few at a time."""
        self._folder = Path(folder)
        self._runner.submit(functools.partial(list_images, self._folder), self._on_listed)

    def add_image(self, path: str, image: QImage | None = None, select: bool = False) -> None:
        """Add a new image at the top (this session's images come first)."""
        if not path or path in self._known:
            return
        self._known.add(path)
        newest_shown = self.list.currentRow() == 0  # then the new image takes its place
        item = self._make_item(path)
        self.list.insertItem(0, item)
        if image is not None and not image.isNull():
            self._remember(path, image)
            self._runner.submit(
                functools.partial(image.scaled, THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                  Qt.TransformationMode.SmoothTransformation),
                functools.partial(self._set_thumb, path))
        else:
            self._runner.submit(functools.partial(read_thumbnail, path),
                                functools.partial(self._set_thumb, path))
        if select or newest_shown or self.list.count() == 1:
            self.list.setCurrentItem(item)
        self._update_state()

    def paths(self) -> list[str]:
        return [str(self.list.item(i).data(PathRole)) for i in range(self.list.count())]

    def current_path(self) -> str:
        item = self.list.currentItem()
        return str(item.data(PathRole)) if item is not None else ""

    def select_path(self, path: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(PathRole) == path:
                self.list.setCurrentRow(i)
                return

    def copy_current(self) -> None:
        image = self.viewer.image()
        if image is not None:
            QApplication.clipboard().setImage(image)
            self.message.emit("info", "Image copied to the clipboard")

    def open_folder(self) -> None:
        path = self.current_path()
        if path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))

    def delete_current(self, confirm: bool = True) -> bool:
        """Move the selected image to the system trash, asking first; where there is no
        trash, ask again before deleting it for good."""
        path = self.current_path()
        if not path:
            return False
        name = Path(path).name
        if confirm and not self._ask("Delete image", f"Move {name} to the trash?\n\n{path}",
                                     "Move to Trash"):
            return False
        trashed = move_to_trash(path) if os.path.exists(path) else None
        if trashed is None and os.path.exists(path):
            if not self._ask("Delete image", f"{name} cannot be moved to a trash on this "
                             f"drive. Delete it for good? This cannot be undone.\n\n{path}",
                             "Delete for Good"):
                return False
            try:
                os.remove(path)
            except OSError as exc:
                self.message.emit("error", f"Could not delete {name}: {exc.strerror}")
                return False
        self._forget(path)
        if trashed is not None:
            self._last_deleted = (path, trashed)
            self.message.emit("info", f"Moved {name} to the trash (Ctrl+Z brings it back)")
        else:
            self._last_deleted = None
            self.message.emit("info", f"Deleted {name}")
        self._update_state()
        return True

    def undo_delete(self) -> bool:
        """Bring the last image moved to the trash back to its folder and list it again."""
        if self._last_deleted is None:
            return False
        original, trashed = self._last_deleted
        name = Path(original).name
        try:
            restore_from_trash(trashed, original)
        except FileExistsError:
            self.message.emit("error", f"Could not bring {name} back: a file of that name is "
                              "there again")
            return False
        except OSError as exc:
            self.message.emit("error", f"Could not bring {name} back from the trash: "
                              f"{exc.strerror or exc}")
            return False
        self._last_deleted = None
        self.add_image(original, select=True)
        self.message.emit("info", f"{name} is back in {Path(original).parent}")
        self._update_state()
        return True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent)
                and event.matches(QKeySequence.StandardKey.Delete)
                and watched in (self.list, self.viewer)):
            self.delete_current()
            return True
        return super().eventFilter(watched, event)

    def _ask(self, title: str, text: str, yes_text: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, title, text,
                          QMessageBox.StandardButton.Cancel, self)
        yes = box.addButton(yes_text, QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is yes

    def _forget(self, path: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(PathRole) == path:
                self.list.takeItem(i)
                break
        self._known.discard(path)
        self._full_cache.pop(path, None)
        if self.list.count() == 0:
            self.viewer.set_image(None)
            self.info.clear()
            self.path_label.clear()

    def shutdown(self) -> None:
        self._runner.stop()

    # ============================================================== internals
    def _make_item(self, path: str) -> QListWidgetItem:
        item = QListWidgetItem(Path(path).name)
        item.setData(PathRole, path)
        item.setToolTip(path)
        item.setText("")
        item.setSizeHint(QSize(THUMB + 10, THUMB + 10))
        return item

    def _on_listed(self, paths: list[str]) -> None:
        new = [p for p in paths if p not in self._known]
        for p in new:
            self._known.add(p)
            self.list.addItem(self._make_item(p))
        self._update_state()
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)
        for start in range(0, len(new), BATCH):
            chunk = new[start:start + BATCH]
            self._runner.submit(functools.partial(read_thumbnails, chunk), self._on_thumbs)

    def _on_thumbs(self, results: list[tuple[str, QImage]]) -> None:
        for path, thumb in results:
            self._set_thumb(path, thumb)

    def _set_thumb(self, path: str, thumb: QImage) -> None:
        if thumb.isNull():
            return
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(PathRole) == path:
                item.setIcon(QIcon(QPixmap.fromImage(thumb)))
                return

    def _remember(self, path: str, image: QImage) -> None:
        self._full_cache[path] = image
        self._full_cache.move_to_end(path)
        while len(self._full_cache) > 24:
            self._full_cache.popitem(last=False)

    def _on_current(self, current: QListWidgetItem | None, _prev: object = None) -> None:
        self._update_state()
        if current is None:
            return
        path = str(current.data(PathRole))
        self.path_label.setText(Path(path).name)
        self.path_label.setToolTip(path)
        cached = self._full_cache.get(path)
        if cached is not None:
            self.viewer.set_image(cached)
        else:
            self._runner.submit(functools.partial(QImage, path),
                                functools.partial(self._show_full, path))
        self.info.setText("…")
        self._runner.submit(functools.partial(describe, path),
                            functools.partial(self._show_info, path))

    def _show_full(self, path: str, image: QImage) -> None:
        if path != self.current_path():
            return
        if image.isNull():
            self.viewer.set_image(None)
            self.viewer.set_placeholder("This image cannot be read")
            return
        self._remember(path, image)
        self.viewer.set_image(image)

    def _show_info(self, path: str, text: str) -> None:
        if path == self.current_path():
            self.info.setText(text)

    def _emit_path(self, signal: SignalInstance) -> None:
        path = self.current_path()
        if path:
            signal.emit(path)

    def _update_state(self) -> None:
        has = self.list.currentItem() is not None
        for b in (self.img2img_button, self.inpaint_button, self.reuse_button, self.copy_button,
                  self.folder_button, self.delete_button):
            b.setEnabled(has)
        self.undo_button.setEnabled(self._last_deleted is not None)
        empty = self.list.count() == 0
        self.empty_label.setVisible(empty)
        self.list.setVisible(not empty)
