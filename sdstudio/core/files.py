"""Reading and writing the small files SD Studio keeps (styles, history, notes beside models).

* :func:`read_regular` reads a regular file of at most ``max_bytes`` without ever blocking
  (a FIFO or device is refused before any read) and without reading more than the limit.
* :func:`write_atomic` replaces a file so that it is either the old one or the new one, never
  half of each: a temp file in the same folder, written, flushed and fsynced, then renamed.

Pure Python: no Qt.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class FileRefused(ValueError):
    """A file that is not a regular file or is larger than allowed (one-line message)."""


def read_regular(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``; FileRefused when it is not a regular file or holds more than
    ``max_bytes`` (``what`` names it in the message); OSError as raised (not found...)."""
    name = Path(path).name
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileRefused(f"{name} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # the file object owns it now
            raw = fh.read(max_bytes + 1)
    finally:
        if fd != -1:
            os.close(fd)
    if len(raw) > max_bytes:
        raise FileRefused(f"{name} is too large for a {what} (more than {_size(max_bytes)})")
    return raw


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def write_atomic(path: Path, data: bytes, prefix: str = ".sdstudio-") -> Path:
    """Replace ``path`` with ``data`` atomically (its folder is made if needed). OSError
    when it cannot be written, leaving no temp file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
