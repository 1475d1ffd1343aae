"""File dialogs that open where the person last was, per kind of file.

Each kind (model files, images, masks, prompt lists, folders of models, output folders) keeps
the folder last used for it; a dialog starts there, else in Pictures (images, masks) or the
home folder, never in the process' working directory. The folders are saved with the window's
settings (``Settings.ui["dialog_folders"]``); what is read back is only used as a dialog's
start folder, and only when it is an existing folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QFileDialog, QWidget

KINDS = ("models", "images", "masks", "prompt_lists", "model_folders", "output")
_PICTURES = frozenset({"images", "masks"})
_last: dict[str, str] = {}


def load(saved: Any) -> None:
    """Take the saved folders (from settings; anything odd is ignored)."""
    _last.clear()
    if isinstance(saved, Mapping):
        for kind, folder in saved.items():
            if kind in KINDS and isinstance(folder, str) and folder:
                _last[kind] = folder


def saved() -> dict[str, str]:
    return dict(_last)


def remember(kind: str, path: str) -> None:
    """Remember the folder of ``path`` (a file) or ``path`` itself (a folder) for ``kind``."""
    if not path:
        return
    p = Path(path).expanduser()
    _last[kind] = str(p if p.is_dir() else p.parent)


def start_dir(kind: str) -> str:
    folder = _last.get(kind, "")
    if folder and os.path.isdir(folder):
        return folder
    if kind in _PICTURES:
        pictures = QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.PicturesLocation)
        if pictures and os.path.isdir(pictures):
            return pictures
    return str(Path.home())


def open_file(parent: QWidget | None, kind: str, title: str, filters: str) -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, start_dir(kind), filters)
    remember(kind, path)
    return path


def save_file(parent: QWidget | None, kind: str, title: str, name: str, filters: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, title, str(Path(start_dir(kind)) / name),
                                          filters)
    remember(kind, path)
    return path


def existing_dir(parent: QWidget | None, kind: str, title: str, start: str = "") -> str:
    """A folder; starts at ``start`` when that exists (the folder a field already names)."""
    where = start if start and os.path.isdir(start) else start_dir(kind)
    folder = QFileDialog.getExistingDirectory(parent, title, where)
    remember(kind, folder)
    return folder
