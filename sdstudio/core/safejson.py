"""JSON from disk or from a model file, parsed with limits on size and depth.

``json.loads`` recurses once per nesting level: ``[[[[...]]]]`` a few thousand levels deep
ends in a ``RecursionError`` (not a ``ValueError``), which the callers' ``except ValueError``
does not catch. :func:`loads` turns that, too deep a nesting and too much text into one
:class:`JSONLimitError` (a ``ValueError``) with a clear message. :func:`load_file` also refuses
what is not a regular file (a FIFO would block the read forever) and reads at most
``max_bytes`` + 1 bytes. Pure Python: no Qt, no torch.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

MAX_BYTES = 16 * 1024 * 1024  # settings, caches and configs are kilobytes
MAX_DEPTH = 64  # real configs nest 3-4 levels deep


class JSONLimitError(ValueError):
    """JSON refused: too large, nested too deeply, not valid, or not a regular file."""


def loads(text: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)`` within limits (JSONLimitError, a ValueError, otherwise)."""
    import json

    if len(text) > max_bytes:
        raise JSONLimitError(f"JSON too large ({len(text)} bytes; at most {max_bytes})")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONLimitError(f"JSON is not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise JSONLimitError(f"JSON nested too deeply (more than {max_depth} levels)") from None
    except ValueError as exc:
        raise JSONLimitError(f"not valid JSON ({exc})") from None
    if depth(data, max_depth) > max_depth:
        raise JSONLimitError(f"JSON nested too deeply (more than {max_depth} levels)")
    return data


def depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` is 1), without recursion; stops
    counting once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((v, level) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_limited(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (JSONLimitError otherwise; OSError
    as raised, FileNotFoundError included). Opened non-blocking, so a FIFO never blocks."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(os.fspath(path), flags)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise JSONLimitError(f"{Path(path).name} is not a regular file")
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JSONLimitError(f"{Path(path).name} is too large for a JSON file "
                             f"(more than {max_bytes} bytes)")
    return raw


def load_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file parsed within limits: JSONLimitError (a ValueError) for a file that is too
    large, too deep, not valid JSON or not a regular file; OSError when it cannot be read."""
    return loads(read_limited(path, max_bytes), max_bytes=max_bytes, max_depth=max_depth)
