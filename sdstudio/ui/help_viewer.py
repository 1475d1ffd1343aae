"""The user guide inside the app (F1): docs/user-guide.md rendered by Qt's Markdown support,
with its screenshots scaled to the window, links between the docs followed in place and web
links opened in the browser. Needs no handler for ``.md`` files on the desktop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QKeySequence, QShortcut, QTextDocument
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from sdstudio.core.paths import resources_dir

IMAGE_MARGIN = 48  # pixels left beside a screenshot


def user_guide_path() -> Path:
    return resources_dir().parent / "docs" / "user-guide.md"


class GuideBrowser(QTextBrowser):
    """A QTextBrowser that keeps to the docs folder: Markdown pages and their images from
    there; anything else (web links) goes to the desktop's browser."""

    def __init__(self, root: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.root = root.resolve()
        self.setOpenLinks(False)
        self.anchorClicked.connect(self.follow)

    def follow(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)
            return
        if not url.isRelative() and not url.isLocalFile():
            return
        target = self.source().resolved(url)
        path = Path(target.toLocalFile())
        if path.suffix.lower() == ".md" and self._inside(path) and path.is_file():
            self.setSource(target, QTextDocument.ResourceType.MarkdownResource)
        elif target.hasFragment() and path == Path(self.source().toLocalFile()):
            self.scrollToAnchor(target.fragment())

    def loadResource(self, kind: int, name: QUrl | str) -> Any:
        url = name if isinstance(name, QUrl) else QUrl(name)
        if kind == QTextDocument.ResourceType.ImageResource.value:
            path = Path(self.source().resolved(url).toLocalFile())
            if not self._inside(path):
                return None
            image = QImage(str(path))
            if image.isNull():
                return None
            width = max(200, self.viewport().width() - IMAGE_MARGIN)
            if image.width() > width:
                image = image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
            return image
        return super().loadResource(kind, name)

    def _inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return False
        return True


class HelpWindow(QDialog):
    """The user guide in a window of its own (not modal), with Back, Home and Find."""

    def __init__(self, parent: QWidget | None = None, guide: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("SD Studio — User guide")
        self.setModal(False)
        self.guide = guide or user_guide_path()
        self.browser = GuideBrowser(self.guide.parent, self)
        self.back_button = QPushButton("← &Back", self)
        self.back_button.clicked.connect(self.browser.backward)
        self.browser.backwardAvailable.connect(self.back_button.setEnabled)
        self.back_button.setEnabled(False)
        self.home_button = QPushButton("&Contents", self)
        self.home_button.clicked.connect(self.go_home)
        self.find_edit = QLineEdit(self)
        self.find_edit.setPlaceholderText("Find in the guide (Enter: next)")
        self.find_edit.setClearButtonEnabled(True)
        self.find_edit.returnPressed.connect(self.find_next)
        find = QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self)
        find.activated.connect(self.find_edit.setFocus)
        bar = QHBoxLayout()
        bar.addWidget(self.back_button)
        bar.addWidget(self.home_button)
        bar.addStretch(1)
        bar.addWidget(self.find_edit, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(bar)
        lay.addWidget(self.browser, 1)
        self.resize(900, 760)
        self.go_home()

    def go_home(self) -> None:
        if self.guide.is_file():
            self.browser.setSource(QUrl.fromLocalFile(str(self.guide)),
                                   QTextDocument.ResourceType.MarkdownResource)
        else:
            self.browser.setPlainText(f"The user guide is not installed here ({self.guide}).")

    def find_next(self) -> bool:
        text = self.find_edit.text()
        if not text:
            return False
        if self.browser.find(text):
            return True
        cursor = self.browser.textCursor()  # from the top again
        cursor.movePosition(cursor.MoveOperation.Start)
        self.browser.setTextCursor(cursor)
        return self.browser.find(text)
