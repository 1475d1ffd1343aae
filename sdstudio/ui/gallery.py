"""The gallery: thumbnails of this session's images and of earlier ones in the output folder.

The output folder is listed in a background runner, recursively (sub-folders made by file-name
patterns such as ``batch-x/{date}/…``, down to :data:`MAX_DEPTH` levels; hidden folders and
links to folders are skipped), newest first, at most :data:`MAX_LISTED` images. Thumbnails
are made only for the rows in view (and one page ahead), in a second runner, through the disk
cache of :mod:`sdstudio.ui.thumb_cache`, so a second start reads small files instead of
decoding images; at most :data:`MAX_ICONS` are kept in memory. Clicking a thumbnail shows it
large with its parameters; the buttons and the right-click menu
(:mod:`sdstudio.ui.result_actions`) send it to img2img / inpaint, restore its parameters or
seed, copy it or its parameters, open its folder, view it full screen or move it to the system
trash (after confirmation; Ctrl+Z brings the last one back). Thumbnails and the large image
can be dragged out (onto a canvas or another program).
"""

from __future__ import annotations

import functools
import heapq
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import (
    QEvent,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    QTimer,
    Signal,
    SignalInstance,
)
from PySide6.QtGui import (
    QIcon,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPalette,
    QPen,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.errors import ImageInputError
from sdstudio.ui.background import BackgroundRunner
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.flow_layout import FlowLayout
from sdstudio.ui.imageutil import load_image_file
from sdstudio.ui.result_actions import (
    FULL_SCREEN_KEYS,
    FullScreenViewer,
    ResultHandlers,
    ResultTarget,
    ViewerActions,
    build_menu,
    copy_image,
    drag_mime,
    open_folder,
    start_drag,
    target_from_file,
)
from sdstudio.ui.theme import icon
from sdstudio.ui.thumb_cache import ThumbCache
from sdstudio.ui.trash import move_to_trash, restore_from_trash
from sdstudio.ui.widgets import confirm

THUMB = 150
PathRole = Qt.ItemDataRole.UserRole + 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_LISTED = 20_000  # images listed from the output folder, the newest
MAX_DEPTH = 6  # folder levels below the output folder that are listed
MAX_SCANNED = 200_000  # folder entries looked at, at most (an output folder set to $HOME)
BATCH = 16  # thumbnails per background task
MAX_ICONS = 600  # thumbnails held in memory; others are read again when scrolled back to
FIRST_ITEMS = 64  # thumbnails made before the list is laid out (or while it is hidden)


def read_thumbnails(paths: Sequence[str], cache: ThumbCache,
                    side: int = THUMB) -> list[tuple[str, QImage]]:
    """(path, thumbnail) for each of ``paths``, in order; a null QImage for an unreadable
    file (runs off the GUI thread)."""
    return [(p, cache.thumbnail(p, side)) for p in paths]


def list_images(folder: Path | str, max_depth: int = MAX_DEPTH, limit: int = MAX_LISTED,
                max_scanned: int = MAX_SCANNED) -> list[str]:
    """Image files in ``folder`` and its sub-folders down to ``max_depth`` levels, newest
    first, at most ``limit``. Hidden files and folders and links to folders are skipped;
    the walk stops after ``max_scanned`` folder entries. Runs off the GUI thread."""
    found: list[tuple[float, str]] = []
    stack: list[tuple[str, int]] = [(os.fspath(folder), 0)]
    scanned = 0
    while stack and scanned < max_scanned:
        current, depth = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                scanned += 1
                if scanned > max_scanned:
                    break
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth < max_depth:
                            stack.append((entry.path, depth + 1))
                    elif name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                        found.append((entry.stat().st_mtime, entry.path))
                except OSError:
                    continue
    return [p for _, p in heapq.nlargest(limit, found)]


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


class ThumbnailList(QListWidget):
    """The thumbnails; an item drags out as its file (a copy: the file never moves)."""

    def mimeData(self, items: Sequence[QListWidgetItem]) -> QMimeData:
        paths = [str(item.data(PathRole)) for item in items]
        return drag_mime(ResultTarget(paths[0] if paths else ""))

    def startDrag(self, supportedActions: Qt.DropAction) -> None:
        item = self.currentItem()
        if item is None:
            return
        thumb = item.icon().pixmap(QSize(THUMB, THUMB)).toImage()
        start_drag(self, ResultTarget(str(item.data(PathRole))),
                   preview=None if thumb.isNull() else thumb)


class GalleryWidget(QWidget):
    sendToImg2img = Signal(str)
    sendToInpaint = Signal(str)
    reuseParameters = Signal(str)
    reuseSeed = Signal(int)
    upscaleRequested = Signal(str)  # "Upscale…" on an image: its path
    message = Signal(str, str)  # kind ("info"/"error"), text

    def __init__(self, parent: QWidget | None = None,
                 thumb_cache: ThumbCache | None = None) -> None:
        super().__init__(parent)
        self._runner = BackgroundRunner("sdstudio-gallery", self)
        self._thumbs = BackgroundRunner("sdstudio-thumbnails", self)
        self.thumb_cache = thumb_cache if thumb_cache is not None else ThumbCache()
        self._items: dict[str, QListWidgetItem] = {}
        self._full_cache: OrderedDict[str, QImage] = OrderedDict()
        self._folder: Path | None = None
        self._shown_path = ""  # the image whose pixels the viewer shows
        self._iconed: OrderedDict[str, None] = OrderedDict()  # thumbnails in memory, LRU
        self._pending: set[str] = set()  # queued on the thumbnail runner
        self._fresh: set[str] = set()  # new images being scaled from their pixels
        self._wanted: set[str] = set()  # rows in view (and one page ahead)
        self._full_screen: FullScreenViewer | None = None
        self._visible_timer = QTimer(self)
        self._visible_timer.setSingleShot(True)
        self._visible_timer.setInterval(40)
        self._visible_timer.timeout.connect(self.load_visible_thumbnails)

        self.list = ThumbnailList(self)
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setGridSize(QSize(THUMB + 16, THUMB + 16))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setSpacing(2)
        self.list.setWordWrap(False)
        self.list.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.list.setDragEnabled(True)
        self.list.setDragDropMode(QListWidget.DragDropMode.DragOnly)
        self.list.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.list.setAccessibleName("Gallery thumbnails")
        self.list.setItemDelegate(ThumbnailDelegate(self.list))
        self.list.setMouseTracking(True)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._list_menu)
        bar = self.list.verticalScrollBar()
        bar.valueChanged.connect(self._schedule_visible)
        bar.rangeChanged.connect(self._schedule_visible)

        self.empty_label = QLabel("Images you generate appear here.\nEarlier images from the "
                                  "output folder are listed too.", self)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)

        self.viewer = ImageViewer(self)
        self.viewer.set_placeholder("Select an image")
        self.viewer.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.viewer.customContextMenuRequested.connect(self._viewer_menu)
        self.viewer_actions = ViewerActions(
            self.viewer, self._shown_target, lambda: self.show_full_screen(self.current_path()),
            on_step=self.step)
        self.list.itemActivated.connect(lambda _item: self.viewer.setFocus())
        self.info = QLabel(self)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.info.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.info.setMaximumHeight(110)
        self.path_label = QLabel(self)
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)

        self.img2img_button = self._button("img2img", "To image to image",
                                           "Use this image as the image-to-image source")
        self.inpaint_button = self._button("inpaint", "To inpaint",
                                           "Use this image as the inpaint source")
        self.reuse_button = self._button("restore", "Reuse parameters",
                                         "Restore the prompt and settings this image was made "
                                         "with")
        self.copy_button = self._button("copy", "Copy", "Copy the image to the clipboard")
        self.folder_button = self._button("folder", "Open folder",
                                          "Show the image in its folder")
        self.delete_button = self._button("delete", "Delete…",
                                          "Move this image file to the trash (asks first)")
        self.undo_button = self._button("restore", "Undo delete",
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
        # Delete in the thumbnail list or on the image (not window-wide: text boxes keep it);
        # the list's viewport for its size (which rows are in view)
        self.list.installEventFilter(self)
        self.list.viewport().installEventFilter(self)
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
        """List ``folder`` (recursively) in the background, then thumbnail the rows in view."""
        self._folder = Path(folder)
        self._runner.submit(functools.partial(list_images, self._folder), self._on_listed)

    def add_image(self, path: str, image: QImage | None = None, select: bool = False) -> None:
        """Add a new image at the top (this session's images come first)."""
        if not path or path in self._items:
            return
        newest_shown = self.list.currentRow() == 0  # then the new image takes its place
        item = self._make_item(path)
        self.list.insertItem(0, item)
        if image is not None and not image.isNull():
            self._remember(path, image)
            self._fresh.add(path)  # its thumbnail from the pixels at hand, kept on disk too
            self._runner.submit(functools.partial(self.thumb_cache.put, path, THUMB, image),
                                functools.partial(self._set_thumb, path))
        self._schedule_visible()
        if select or newest_shown or self.list.count() == 1:
            self.list.setCurrentItem(item)
        self._update_state()

    def paths(self) -> list[str]:
        return [str(self.list.item(i).data(PathRole)) for i in range(self.list.count())]

    def current_path(self) -> str:
        item = self.list.currentItem()
        return str(item.data(PathRole)) if item is not None else ""

    def select_path(self, path: str) -> None:
        item = self._items.get(path)
        if item is not None:
            self.list.setCurrentItem(item)

    def step(self, where: int | str) -> None:
        """Select the previous (-1) or next (+1) image, or the "first" or "last" one."""
        count = self.list.count()
        if not count:
            return
        if where == "first":
            row = 0
        elif where == "last":
            row = count - 1
        else:
            row = max(0, min(count - 1, self.list.currentRow() + int(where)))
        self.list.setCurrentRow(row)

    def has_thumbnail(self, path: str) -> bool:
        item = self._items.get(path)
        return item is not None and not item.icon().isNull()

    def copy_current(self) -> None:
        path = self.current_path()
        if path:
            copy_image(self._target(path), lambda text: self.message.emit("info", text))

    def open_folder(self) -> None:
        open_folder(self.current_path())

    def show_full_screen(self, path: str = "", image: QImage | None = None) -> FullScreenViewer:
        """View ``path`` full screen, stepping through the gallery's images from there (or
        ``image`` alone when it is not a gallery image); the selection follows."""
        if self._full_screen is None:
            self._full_screen = FullScreenViewer(self)
            self._full_screen.currentChanged.connect(self.select_path)
        paths = self.paths()
        if path in self._items:
            self._full_screen.show_images(paths, paths.index(path))
        else:
            self._full_screen.show_images([], 0, image)
        return self._full_screen

    def context_menu(self) -> QMenu | None:
        """The right-click menu for the selected image (None when none is selected)."""
        path = self.current_path()
        if not path:
            return None
        return build_menu(self, self._target(path), ResultHandlers(
            to_img2img=self.sendToImg2img.emit, to_inpaint=self.sendToInpaint.emit,
            reuse_parameters=self.reuseParameters.emit, reuse_seed=self.reuseSeed.emit,
            full_screen=lambda target: self.show_full_screen(target.path),
            delete=lambda p: self.delete_path(p),
            message=lambda text: self.message.emit("info", text),
            upscale=self.upscaleRequested.emit))

    def delete_current(self, confirm: bool = True) -> bool:
        return self.delete_path(self.current_path(), confirm)

    def delete_path(self, path: str, confirm: bool = True) -> bool:
        """Move a gallery image to the system trash, asking first; where there is no
        trash, ask again before deleting it for good."""
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
        kind = event.type()
        if watched is self.list.viewport():
            if kind in (QEvent.Type.Resize, QEvent.Type.Show):
                self._schedule_visible()
            return False
        if (kind == QEvent.Type.KeyPress and isinstance(event, QKeyEvent)
                and watched in (self.list, self.viewer)):
            if event.matches(QKeySequence.StandardKey.Delete):
                self.delete_current()
                return True
            if (watched is self.list and event.key() in FULL_SCREEN_KEYS
                    and event.modifiers() == Qt.KeyboardModifier.NoModifier
                    and self.current_path()):
                self.show_full_screen(self.current_path())
                return True
        return super().eventFilter(watched, event)

    def _ask(self, title: str, text: str, yes_text: str) -> bool:
        return confirm(self, title, text, yes_text)

    def _forget(self, path: str) -> None:
        item = self._items.pop(path, None)
        if item is not None:
            self.list.takeItem(self.list.row(item))
        self._full_cache.pop(path, None)
        self._iconed.pop(path, None)
        if self.list.count() == 0:
            self.viewer.set_image(None)
            self._shown_path = ""
            self.info.clear()
            self.path_label.clear()

    def shutdown(self) -> None:
        self._visible_timer.stop()
        if self._full_screen is not None:
            self._full_screen.close()
        self._thumbs.stop()
        self._runner.stop()

    # ============================================================== thumbnails
    def visible_rows(self) -> range:
        """The rows in view; the first :data:`FIRST_ITEMS` while the list is hidden or not
        laid out yet. The grid fills row by row, so a row's top never decreases with its
        index: two binary searches find the rows, whatever the count."""
        count = self.list.count()
        height = self.list.viewport().height()

        def rect(row: int) -> QRect:
            return self.list.visualItemRect(self.list.item(row))

        if not self._laid_out():
            return range(min(count, FIRST_ITEMS))
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) // 2
            if rect(mid).bottom() < 0:
                lo = mid + 1
            else:
                hi = mid
        first = lo
        hi = count
        while lo < hi:
            mid = (lo + hi) // 2
            if rect(mid).top() < height:
                lo = mid + 1
            else:
                hi = mid
        return range(first, lo)

    def _laid_out(self) -> bool:
        """Whether the list is shown with its items placed (else no row is in view)."""
        return (self.list.count() > 0 and self.list.isVisible()
                and self.list.viewport().height() > 0
                and not self.list.visualItemRect(self.list.item(0)).isEmpty())

    def load_visible_thumbnails(self) -> None:
        """Thumbnail the rows in view and one page below them (work queued for rows that
        went out of view is dropped); the least recently seen thumbnails beyond
        :data:`MAX_ICONS` are let go."""
        rows = self.visible_rows()
        ahead = len(rows) if self._laid_out() else 0
        wanted = range(rows.start, min(self.list.count(), rows.stop + ahead))
        paths = [str(self.list.item(row).data(PathRole)) for row in wanted]
        self._wanted = set(paths)
        for path in paths:
            if path in self._iconed:
                self._iconed.move_to_end(path)
        need = [p for p in paths if p not in self._iconed and p not in self._fresh]
        if set(need) - self._pending:
            self._thumbs.cancel_pending()
            self._pending = set(need)
            for start in range(0, len(need), BATCH):
                chunk = need[start:start + BATCH]
                self._thumbs.submit(functools.partial(read_thumbnails, chunk, self.thumb_cache),
                                    self._on_thumbs)

    def _schedule_visible(self, *args: object) -> None:
        if not self._visible_timer.isActive():
            self._visible_timer.start()

    def _on_thumbs(self, results: list[tuple[str, QImage]]) -> None:
        for path, thumb in results:
            self._pending.discard(path)
            self._set_thumb(path, thumb)

    def _set_thumb(self, path: str, thumb: QImage) -> None:
        self._fresh.discard(path)
        item = self._items.get(path)
        if item is None or thumb.isNull():
            return
        item.setIcon(QIcon(QPixmap.fromImage(thumb)))
        self._iconed[path] = None
        self._iconed.move_to_end(path)
        for _ in range(len(self._iconed)):
            if len(self._iconed) <= MAX_ICONS:
                break
            old, _none = self._iconed.popitem(last=False)
            if old in self._wanted:
                self._iconed[old] = None  # still in view: to the back of the line
                continue
            gone = self._items.get(old)
            if gone is not None:
                gone.setIcon(QIcon())

    # ============================================================== internals
    def _make_item(self, path: str) -> QListWidgetItem:
        item = QListWidgetItem(Path(path).name)
        item.setData(PathRole, path)
        item.setToolTip(path)
        item.setText("")
        item.setSizeHint(QSize(THUMB + 10, THUMB + 10))
        self._items[path] = item
        return item

    def _on_listed(self, paths: list[str]) -> None:
        new = [p for p in paths if p not in self._items]
        self.list.setUpdatesEnabled(False)
        for p in new:
            self.list.addItem(self._make_item(p))
        self.list.setUpdatesEnabled(True)
        self._update_state()
        if self.list.currentItem() is None and self.list.count():
            self.list.setCurrentRow(0)
        self.load_visible_thumbnails()

    def _target(self, path: str) -> ResultTarget:
        image = self.viewer.image() if path == self._shown_path else None
        return target_from_file(path, image)

    def _shown_target(self) -> ResultTarget | None:
        return ResultTarget(self._shown_path, self.viewer.image()) if self._shown_path \
            else None

    def _list_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        if item is not None:
            self.list.setCurrentItem(item)
            self._exec_menu(self.list.viewport().mapToGlobal(pos))

    def _viewer_menu(self, pos: QPoint) -> None:
        self._exec_menu(self.viewer.mapToGlobal(pos))

    def _exec_menu(self, at: QPoint) -> None:
        menu = self.context_menu()
        if menu is not None:
            menu.exec(at)
            menu.deleteLater()

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
            self._shown_path = path
            self.viewer.set_image(cached)
        else:
            self._runner.submit(functools.partial(load_image_file, path),
                                functools.partial(self._show_full, path),
                                functools.partial(self._full_failed, path))
        self.info.setText("…")
        self._runner.submit(functools.partial(describe, path),
                            functools.partial(self._show_info, path))

    def _show_full(self, path: str, image: QImage) -> None:
        if path != self.current_path():
            return
        self._remember(path, image)
        self._shown_path = path
        self.viewer.set_image(image)

    def _full_failed(self, path: str, error: BaseException) -> None:
        if path != self.current_path():
            return
        self._shown_path = ""
        self.viewer.set_image(None)
        self.viewer.set_placeholder(str(error) if isinstance(error, ImageInputError)
                                    else "This image cannot be read")

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
