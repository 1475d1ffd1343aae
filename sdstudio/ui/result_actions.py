"""What a person can do with a finished image, shared by the result views and the gallery:
the right-click menu (send to image to image / inpaint, reuse parameters or the seed, copy the
image or its parameters, open its folder, show it in the gallery, view it full screen,
delete), dragging the image out (onto a canvas, the file manager or another program) and the
full-screen viewer with zoom that steps through the images with Left/Right/Home/End.

Dragging out must not take the left button from panning: a view starts a drag with the left
button only while its image is fitted to the view (as it is until you zoom); zoomed in, the
left button pans as before and Ctrl + left-drag drags the image out. While a result is being
compared with its source, the left button moves the divider and Ctrl + drag drags out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject, QPoint, Qt, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QDesktopServices,
    QDrag,
    QIcon,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPalette,
    QPixmap,
)
from PySide6.QtWidgets import QApplication, QLabel, QMenu, QVBoxLayout, QWidget

from sdstudio.core.errors import ImageInputError, SDStudioError
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.imageutil import load_image_file
from sdstudio.ui.theme import icon

DRAG_PIXMAP = 96  # the side of the image shown under the cursor while dragging
FULL_SCREEN_KEYS = (Qt.Key.Key_F, Qt.Key.Key_F11)


@dataclass(frozen=True)
class ResultTarget:
    """One image to act on: its file ("" when it was not saved), its pixels when at hand,
    its A1111 infotext ("" for none) and seed (None when unknown)."""

    path: str = ""
    image: QImage | None = None
    infotext: str = ""
    seed: int | None = None


def target_from_file(path: str, image: QImage | None = None) -> ResultTarget:
    """A target for an image file, with the parameters stored in it (if any)."""
    from sdstudio.storage.png import read_image_metadata

    try:
        meta = read_image_metadata(path)
    except SDStudioError:  # a foreign image without parameters, or unreadable
        return ResultTarget(path, image)
    return ResultTarget(path, image, meta.infotext, meta.request.seed)


@dataclass
class ResultHandlers:
    """What the menu's actions call; None leaves an action out of the menu."""

    to_img2img: Callable[[str], object]
    to_inpaint: Callable[[str], object]
    reuse_parameters: Callable[[str], object]
    reuse_seed: Callable[[int], object]
    full_screen: Callable[[ResultTarget], object]
    delete: Callable[[str], object]
    message: Callable[[str], object]  # a short note for the status bar
    show_in_gallery: Callable[[str], object] | None = None
    upscale: Callable[[str], object] | None = None  # "Upscale…" (the window's dialog)


def build_menu(parent: QWidget, target: ResultTarget, handlers: ResultHandlers) -> QMenu:
    """The right-click menu for ``target``; actions that cannot apply are disabled."""
    menu = QMenu(parent)
    has_file = bool(target.path) and Path(target.path).is_file()
    has_params = bool(target.infotext)

    def add(name: str, text: str, slot: Callable[[], object], enabled: bool,
            icon_name: str = "", keys: str = "") -> None:
        action = QAction(icon(icon_name) if icon_name else QIcon(), text, menu)
        action.setObjectName(name)
        if keys:
            action.setShortcut(QKeySequence(keys))  # shown in the menu; the views act on it
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        action.setEnabled(enabled)
        action.triggered.connect(lambda _=False: slot())
        menu.addAction(action)

    path, seed = target.path, target.seed
    add("to_img2img", "Send to &image to image", lambda: handlers.to_img2img(path), has_file,
        "img2img")
    add("to_inpaint", "Send to i&npaint", lambda: handlers.to_inpaint(path), has_file,
        "inpaint")
    if handlers.upscale is not None:
        upscale = handlers.upscale
        add("upscale", "&Upscale…", lambda: upscale(path), has_file)
    menu.addSeparator()
    add("reuse_parameters", "&Reuse parameters", lambda: handlers.reuse_parameters(path),
        has_file and has_params, "restore")
    add("reuse_seed", f"Reuse &seed ({seed})" if seed is not None else "Reuse &seed",
        lambda: handlers.reuse_seed(seed) if seed is not None else None, seed is not None,
        "reuse")
    menu.addSeparator()
    add("copy_image", "&Copy image", lambda: copy_image(target, handlers.message),
        target.image is not None or has_file, "copy")
    add("copy_parameters", "Copy &parameters", lambda: copy_parameters(target,
                                                                       handlers.message),
        has_params, "file")
    add("open_folder", "Open &folder", lambda: open_folder(path), has_file, "folder")
    if handlers.show_in_gallery is not None:
        show = handlers.show_in_gallery
        add("show_in_gallery", "Show in &gallery", lambda: show(path), has_file, "gallery")
    add("full_screen", "View full scree&n", lambda: handlers.full_screen(target),
        target.image is not None or has_file, keys="F")
    menu.addSeparator()
    add("delete", "&Delete…", lambda: handlers.delete(path), has_file, "delete")
    return menu


def menu_action(menu: QMenu, name: str) -> QAction:
    """The action called ``name`` in a menu made by :func:`build_menu`."""
    for action in menu.actions():
        if action.objectName() == name:
            return action
    raise KeyError(name)


def image_of(target: ResultTarget) -> QImage | None:
    """The target's pixels: those at hand, else read (safely) from its file."""
    if target.image is not None and not target.image.isNull():
        return target.image
    if target.path:
        try:
            return load_image_file(target.path)
        except ImageInputError:
            return None
    return None


def copy_image(target: ResultTarget, message: Callable[[str], object]) -> bool:
    image = image_of(target)
    if image is None:
        message("The image cannot be read")
        return False
    mime = QMimeData()
    mime.setImageData(image)
    if target.path:
        mime.setUrls([QUrl.fromLocalFile(target.path)])
    QApplication.clipboard().setMimeData(mime)
    message("Image copied to the clipboard")
    return True


def release_clipboard() -> None:
    """Before Python shuts down: if the clipboard holds mime data made in Python (an image
    copied with its file), put the same image (and text) back as data Qt makes itself. Qt
    deletes the clipboard's data after the interpreter has gone, and deleting a Python-made
    object then crashes the process at exit."""
    from shiboken6 import Shiboken

    app = QApplication.instance()
    if app is None:
        return
    board = QApplication.clipboard()
    mime = board.mimeData()
    if mime is None or not Shiboken.createdByPython(mime):
        return
    image = mime.imageData() if mime.hasImage() else None
    text = mime.text() if mime.hasText() else ""
    if isinstance(image, QImage) and not image.isNull():
        board.setImage(image)
    elif text:
        board.setText(text)
    else:
        board.clear()


def copy_parameters(target: ResultTarget, message: Callable[[str], object]) -> bool:
    if not target.infotext:
        return False
    QApplication.clipboard().setText(target.infotext)
    message("Parameters copied to the clipboard")
    return True


def open_folder(path: str) -> None:
    if path:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent)))


# ============================================================================ drag out
def drag_mime(target: ResultTarget) -> QMimeData:
    """The file (as a URL: canvases, file managers and browsers take it) and, when the
    pixels are at hand, the image data for programs that take pixels only."""
    mime = QMimeData()
    if target.path:
        mime.setUrls([QUrl.fromLocalFile(target.path)])
    if target.image is not None and not target.image.isNull():
        mime.setImageData(target.image)
    return mime


def exec_drag(drag: QDrag) -> Qt.DropAction:
    """Run a drag (tests replace this: a real drag waits for the mouse)."""
    return drag.exec(Qt.DropAction.CopyAction, Qt.DropAction.CopyAction)


def start_drag(source: QWidget, target: ResultTarget,
               preview: QImage | None = None) -> Qt.DropAction:
    """Drag ``target`` out of ``source`` as a copy (never a move: the file stays); under the
    cursor a small ``preview`` (default: the target's image)."""
    drag = QDrag(source)
    drag.setMimeData(drag_mime(target))
    image = preview if preview is not None else target.image
    if image is not None and not image.isNull():
        pixmap = QPixmap.fromImage(image.scaled(
            DRAG_PIXMAP, DRAG_PIXMAP, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))
        drag.setPixmap(pixmap)
        drag.setHotSpot(QPoint(pixmap.width() // 2, pixmap.height() // 2))
    return exec_drag(drag)


class ViewerActions(QObject):
    """Installed on an :class:`ImageViewer` that shows a finished image: drags the image out
    (left button while fitted, Ctrl + left button always; never while space is held for
    panning), opens it full screen (F or F11) and, with ``on_step``, steps through images
    with Left/Right/Home/End (``on_step`` gets -1, +1, "first" or "last")."""

    def __init__(self, viewer: ImageViewer, target: Callable[[], ResultTarget | None],
                 on_full_screen: Callable[[], object],
                 on_step: Callable[[int | str], object] | None = None) -> None:
        super().__init__(viewer)
        self._viewer = viewer
        self._target = target
        self._on_full_screen = on_full_screen
        self._on_step = on_step
        self._press: QPoint | None = None
        viewer.installEventFilter(self)

    def drag_starts_here(self, event: QMouseEvent) -> bool:
        """Whether a left press starts a drag-out rather than panning (or the divider)."""
        v = self._viewer
        if event.button() != Qt.MouseButton.LeftButton or not v.has_image() \
                or v.space_held():
            return False
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            return True
        comparing = bool(getattr(v, "comparing", lambda: False)())
        return v.is_auto_fit() and not comparing

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is not self._viewer:
            return False
        kind = event.type()
        if kind == QEvent.Type.MouseButtonPress and isinstance(event, QMouseEvent):
            if self.drag_starts_here(event) and self._target() is not None:
                self._press = event.position().toPoint()
                self._viewer.setFocus(Qt.FocusReason.MouseFocusReason)
                return True  # the view does not start panning
            self._press = None
        elif kind == QEvent.Type.MouseMove and isinstance(event, QMouseEvent):
            if self._press is not None and event.buttons() & Qt.MouseButton.LeftButton:
                moved = (event.position().toPoint() - self._press).manhattanLength()
                if moved >= QApplication.startDragDistance():
                    self._press = None
                    target = self._target()
                    if target is not None:
                        start_drag(self._viewer, target)
                    return True
        elif kind == QEvent.Type.MouseButtonRelease:
            self._press = None
        elif kind == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            return self._key(event)
        return False

    def _key(self, event: QKeyEvent) -> bool:
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if mods != Qt.KeyboardModifier.NoModifier:
            return False
        key = event.key()
        if key in FULL_SCREEN_KEYS and self._viewer.has_image():
            self._on_full_screen()
            return True
        if self._on_step is not None:
            steps: dict[Qt.Key, int | str] = {Qt.Key.Key_Left: -1, Qt.Key.Key_Right: 1,
                                              Qt.Key.Key_Home: "first",
                                              Qt.Key.Key_End: "last"}
            step = steps.get(Qt.Key(key))
            if step is not None:
                self._on_step(step)
                return True
        return False


# ============================================================================ full screen
class FullScreenViewer(QWidget):
    """A window of its own, full screen: one image at a time with the viewer's zoom (wheel,
    ``+`` ``-``, ``0`` fit, ``1`` actual size, pan with the mouse); Left/Right (and Page
    Up/Down) step through the images, Home/End go to the first/last, Esc, F or F11 close."""

    currentChanged = Signal(str)  # the path now shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("SD Studio")
        self.setAccessibleName("Full-screen image")
        pal = self.palette()  # dark around the picture, whatever the theme
        for role, colour in ((QPalette.ColorRole.Window, QColor(18, 18, 18)),
                             (QPalette.ColorRole.Base, QColor(22, 22, 22)),
                             (QPalette.ColorRole.WindowText, QColor(210, 210, 210)),
                             (QPalette.ColorRole.Text, QColor(210, 210, 210))):
            pal.setColor(role, colour)
        self.setPalette(pal)
        self.setAutoFillBackground(True)
        self.setStyleSheet("QLabel#fullScreenCaption { color: #d2d2d2; }")
        self._paths: list[str] = []
        self._index = 0
        self.viewer = ImageViewer(self)
        self.viewer.set_placeholder("No image")
        self.viewer.setPalette(pal)  # set on the view itself: the app's style sheet wins
        self.caption = QLabel(self)
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption.setObjectName("fullScreenCaption")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 4)
        lay.setSpacing(2)
        lay.addWidget(self.viewer, 1)
        lay.addWidget(self.caption)

    def show_images(self, paths: Sequence[str], index: int = 0,
                    image: QImage | None = None) -> None:
        """Show ``paths[index]`` full screen (or ``image`` alone when there are no paths)."""
        self._paths = [p for p in paths if p]
        self._index = max(0, min(index, len(self._paths) - 1))
        if self._paths:
            self._show_current()
        else:
            self.viewer.set_image(image)
            self.caption.setText("Esc closes · wheel or + − zoom, 0 fits")
        self.showFullScreen()
        self.raise_()
        self.activateWindow()
        self.viewer.setFocus()

    def paths(self) -> list[str]:
        return list(self._paths)

    def index(self) -> int:
        return self._index

    def current_path(self) -> str:
        return self._paths[self._index] if self._paths else ""

    def step(self, where: int | str) -> None:
        """Go to the previous (-1) or next (+1) image, or the "first" or "last" one."""
        if not self._paths:
            return
        if where == "first":
            index = 0
        elif where == "last":
            index = len(self._paths) - 1
        else:
            index = max(0, min(len(self._paths) - 1, self._index + int(where)))
        if index != self._index:
            self._index = index
            self._show_current()

    def _show_current(self) -> None:
        path = self._paths[self._index]
        name = Path(path).name
        try:
            self.viewer.set_image(load_image_file(path))
        except ImageInputError as exc:
            self.viewer.set_image(None)
            self.viewer.set_placeholder(str(exc))
        self.viewer.fit()
        self.caption.setText(f"{name} · {self._index + 1} / {len(self._paths)} · "
                             "← → Home End step through · wheel or + − zoom, 0 fits · "
                             "Esc closes")
        self.currentChanged.emit(path)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = Qt.Key(event.key())
        steps: dict[Qt.Key, int | str] = {
            Qt.Key.Key_Left: -1, Qt.Key.Key_PageUp: -1, Qt.Key.Key_Right: 1,
            Qt.Key.Key_PageDown: 1, Qt.Key.Key_Home: "first", Qt.Key.Key_End: "last"}
        if key in steps:
            self.step(steps[key])
            event.accept()
            return
        if key in (Qt.Key.Key_Escape, *FULL_SCREEN_KEYS):
            self.close()
            event.accept()
            return
        super().keyPressEvent(event)
