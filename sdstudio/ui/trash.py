"""Deleting images the safe way: into the system trash (freedesktop Trash, the Windows
Recycle Bin, the macOS Trash, through ``QFile.moveToTrash``), and back out for undo."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from PySide6.QtCore import QFile, QStandardPaths


def move_to_trash(path: str) -> str | None:
    """Move ``path`` to the system trash; its path in the trash, or None when this system or
    this file's drive has no trash (the file is then untouched)."""
    # Qt's freedesktop trash needs the data folder to exist (a fresh account may lack it)
    data = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericDataLocation)
    if data:
        with contextlib.suppress(OSError):
            os.makedirs(data, exist_ok=True)
    file = QFile(path)
    if not file.moveToTrash():
        return None
    return file.fileName()


def restore_from_trash(trashed: str, original: str) -> None:
    """Put a file moved by :func:`move_to_trash` back where it was. Raises FileExistsError
    when a file of that name is there again, OSError when the move fails."""
    if os.path.lexists(original):
        raise FileExistsError(original)
    shutil.move(trashed, original)
    info = _trash_info(trashed)
    if info is not None:
        with contextlib.suppress(OSError):
            info.unlink()


def _trash_info(trashed: str) -> Path | None:
    """The freedesktop ``info/<name>.trashinfo`` record of a file in ``.../files/``."""
    p = Path(trashed)
    if p.parent.name != "files":
        return None
    info = p.parent.parent / "info" / f"{p.name}.trashinfo"
    return info if info.is_file() else None
