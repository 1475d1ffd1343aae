"""A copied image survives the app's exit without crashing it: Qt deletes the clipboard's
data after the interpreter has gone, so data made in Python is replaced first."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from tests.cli.conftest import REPO

SCRIPT = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication
from sdstudio.ui.result_actions import release_clipboard
app = QApplication([])
image = QImage(8, 8, QImage.Format.Format_RGB32)
image.fill(QColor("red"))
mime = QMimeData()
mime.setImageData(image)
mime.setUrls([QUrl.fromLocalFile("/tmp/x.png")])
QApplication.clipboard().setMimeData(mime)
release_clipboard()
print("copied", not QApplication.clipboard().image().isNull())
"""


def test_the_process_exits_cleanly_with_an_image_copied(tmp_path: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), SDSTUDIO_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "copied True" in done.stdout


def test_release_keeps_the_image_and_text(qtbot: Any) -> None:
    from sdstudio.ui.result_actions import release_clipboard

    image = QImage(6, 4, QImage.Format.Format_RGB32)
    image.fill(QColor("blue"))
    mime = QMimeData()
    mime.setImageData(image)
    mime.setUrls([QUrl.fromLocalFile("/tmp/y.png")])
    QApplication.clipboard().setMimeData(mime)
    release_clipboard()
    kept = QApplication.clipboard().image()
    assert kept.width() == 6 and kept.pixelColor(0, 0) == QColor("blue")
    text = QMimeData()
    text.setText("Steps: 20")
    QApplication.clipboard().setMimeData(text)
    release_clipboard()
    assert QApplication.clipboard().text() == "Steps: 20"
