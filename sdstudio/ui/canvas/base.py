"""What the image-to-image and inpaint canvases share: taking an image in by file, open dialog,
drag-and-drop or the clipboard, with every failure reported as one line on ``errorOccurred``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject, QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QPalette,
)
from PySide6.QtWidgets import (
    QBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from sdstudio.core.errors import ImageInputError
from sdstudio.core.images import MAX_INPUT_PIXELS as MAX_LOAD_PIXELS
from sdstudio.ui import file_dialogs
from sdstudio.ui.canvas import icons
from sdstudio.ui.canvas.viewer import ImageViewer
from sdstudio.ui.imageutil import load_image_file

IMAGE_FILTER = (
    "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"
)
_RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/gif",
                    "image/tiff", "application/x-qt-image")


def normalise_qimage(image: QImage) -> QImage:
    """RGBA8888 when the image has alpha, else RGB888: the formats the rest of the app uses."""
    if image.hasAlphaChannel():
        return image.convertToFormat(QImage.Format.Format_RGBA8888)
    if image.format() == QImage.Format.Format_Grayscale8:
        return image
    return image.convertToFormat(QImage.Format.Format_RGB888)


def _check_size(image: QImage, what: str) -> QImage:
    if image.isNull():
        raise ImageInputError(f"The {what} holds no readable image.")
    if image.width() * image.height() > MAX_LOAD_PIXELS:
        raise ImageInputError(
            f"The {what} image is too large ({image.width()}×{image.height()}).")
    return normalise_qimage(image)


def local_image_paths(mime: QMimeData) -> list[str]:
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


def mime_may_hold_image(mime: QMimeData) -> bool:
    """Cheap test for drag-enter: local file URLs, image data, or a raw image type."""
    if local_image_paths(mime) or mime.hasImage():
        return True
    return any(mime.hasFormat(t) for t in _RAW_IMAGE_TYPES)


def image_from_mime(mime: QMimeData, what: str = "dropped data") -> QImage | None:
    """The image carried by ``mime`` (a local image file, image data or raw PNG/JPEG bytes).

    Returns None when there is nothing image-like; raises ImageInputError when there is
    something but it cannot be used (a remote URL, a damaged file, too large...).
    """
    paths = local_image_paths(mime)
    if paths:
        return load_image_file(paths[0])
    if mime.hasImage():
        data = mime.imageData()
        if isinstance(data, QImage) and not data.isNull():
            return _check_size(data, what)
    for fmt in _RAW_IMAGE_TYPES:
        if mime.hasFormat(fmt):
            raw = mime.data(fmt)
            if raw.size() > 0:
                img = QImage.fromData(raw)
                if not img.isNull():
                    return _check_size(img, what)
    remote = [u for u in mime.urls() if not u.isLocalFile()]
    if remote:
        raise ImageInputError(
            f"Only local image files can be used ({remote[0].toDisplayString()} is remote); "
            "save it first.")
    if mime.hasText():
        text = mime.text().strip()
        candidate = QUrl(text).toLocalFile() if text.startswith("file:") else text
        if candidate and "\n" not in candidate and len(candidate) < 4096:
            p = Path(candidate).expanduser()
            if p.is_file():
                return load_image_file(p)
    return None


def tool_button(parent: QWidget, icon_name: str, text: str, tip: str,
                checkable: bool = False, with_text: bool = False) -> QToolButton:
    """A flat tool button with a vector icon, an accessible name and a tooltip."""
    b = QToolButton(parent)
    b.setIcon(icons.icon(icon_name))
    b.setText(text)
    b.setToolTip(tip)
    b.setAccessibleName(text.replace("…", ""))
    b.setAutoRaise(True)
    b.setCheckable(checkable)
    b.setIconSize(QSize(20, 20))
    b.setFocusPolicy(Qt.FocusPolicy.TabFocus)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon if with_text
                         else Qt.ToolButtonStyle.ToolButtonIconOnly)
    return b


def open_and_paste_buttons(canvas: ImageCanvasBase) -> tuple[QToolButton, QToolButton]:
    """"Open…" and "Paste" buttons (with text) for a canvas's tool bar, connected to its
    ``open_dialog`` and ``paste``."""
    open_button = tool_button(canvas, "open", "Open…", "Open an image file (Ctrl+O)",
                              with_text=True)
    paste_button = tool_button(canvas, "paste", "Paste",
                               "Paste an image from the clipboard (Ctrl+V)", with_text=True)
    open_button.clicked.connect(canvas.open_dialog)
    paste_button.clicked.connect(canvas.paste)
    return open_button, paste_button


def add_info_and_fit(owner: QWidget, bar: QBoxLayout, view: ImageViewer, fit_tip: str
                     ) -> tuple[QLabel, QToolButton]:
    """Append a dimmed status label and a "Fit" button (connected to ``view.fit``) to a
    canvas's tool bar; returns both."""
    info = QLabel(owner)
    info.setTextFormat(Qt.TextFormat.PlainText)
    # status text only: it may be cut off rather than widen the window
    info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    info.setMinimumWidth(0)
    pal = info.palette()
    pal.setColor(QPalette.ColorRole.WindowText,
                 pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText))
    info.setPalette(pal)
    bar.addWidget(info)
    bar.addSpacing(6)
    fit = tool_button(owner, "fit", "Fit", fit_tip)
    fit.clicked.connect(view.fit)
    bar.addWidget(fit)
    return info, fit


class ToolSeparator(QWidget):
    """A thin vertical rule between groups of tool buttons, in a muted text colour."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedSize(13, 20)

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        c = QColor(self.palette().color(QPalette.ColorRole.WindowText))
        c.setAlphaF(0.25)
        p.fillRect(self.width() // 2, 2, 1, self.height() - 4, c)
        p.end()


class ImageCanvasBase(QWidget):
    """Common behaviour of the canvases; subclasses implement ``set_image`` / ``image``."""

    imageChanged = Signal()
    errorOccurred = Signal(str)

    _what = "image"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self._drag_hover = False

    # to be provided by subclasses
    def set_image(self, image: QImage | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def image(self) -> QImage | None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- inputs
    def load_file(self, path: str) -> bool:
        """Load an image file; on failure emit ``errorOccurred`` and keep the current image."""
        try:
            img = load_image_file(path)
        except ImageInputError as exc:
            self.errorOccurred.emit(str(exc))
            return False
        file_dialogs.remember("images", path)
        self.set_image(img)
        return True

    def load_mime(self, mime: QMimeData, what: str = "dropped data") -> bool:
        try:
            img = image_from_mime(mime, what)
        except ImageInputError as exc:
            self.errorOccurred.emit(str(exc))
            return False
        if img is None:
            self.errorOccurred.emit(f"The {what} holds no image.")
            return False
        paths = local_image_paths(mime)
        if paths:
            file_dialogs.remember("images", paths[0])
        self.set_image(img)
        return True

    def paste(self) -> bool:
        """Take the image from the clipboard (image data, or a copied image file)."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            self.errorOccurred.emit("The clipboard is empty.")
            return False
        return self.load_mime(mime, "clipboard")

    def open_dialog(self) -> bool:
        """Ask for an image file with the platform's open dialog and load it."""
        path = file_dialogs.open_file(self, "images", f"Open {self._what}", IMAGE_FILTER)
        if not path:
            return False
        return self.load_file(path)

    # ---------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if mime_may_hold_image(event.mimeData()):
            event.acceptProposedAction()
            self._set_drag_hover(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if mime_may_hold_image(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QEvent) -> None:
        self._set_drag_hover(False)
        super().dragLeaveEvent(event)  # type: ignore[arg-type]

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_drag_hover(False)
        if self.load_mime(event.mimeData(), "dropped data"):
            event.acceptProposedAction()
        else:
            event.ignore()

    def _set_drag_hover(self, on: bool) -> None:
        self._drag_hover = on
        self.update()

    # ---------------------------------------------------------------- keys
    def handles_key(self, event: QKeyEvent) -> bool:
        """Whether this canvas acts on ``event`` (used to claim shortcut overrides)."""
        return event.matches(QKeySequence.StandardKey.Paste)

    def event(self, event: QEvent) -> bool:
        # Claim our keys before any window-wide shortcut while focus is inside the canvas.
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent) \
                and self.handles_key(event):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Paste):
            self.paste()
            event.accept()
            return
        super().keyPressEvent(event)


def is_descendant(obj: QObject | None, ancestor: QObject) -> bool:
    while obj is not None:
        if obj is ancestor:
            return True
        obj = obj.parent()
    return False
