"""sha256 of model files, cached by (path, size, mtime) in ``paths.cache_dir()/hashes.json``.

AUTOMATIC1111's "Model hash" is the first 10 hex digits of a checkpoint file's sha256. A
diffusers folder has several weight files; its hash is the sha256 of the sorted list of
``relative/path <file sha256>`` lines, so it is stable across copies and machines.

No torch here: the model-folder scanner can use it from any thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

from sdstudio.core import paths, safejson

_LOCK = threading.Lock()
_CHUNK = 4 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors",)
MAX_CACHE_BYTES = 64 * 1024 * 1024  # ~200 bytes per file hashed


def _cache_file() -> Path:
    return paths.cache_dir() / "hashes.json"


def _load_cache() -> dict[str, dict[str, object]]:
    """The hash cache; {} when there is none. A damaged one (not JSON, nested too deeply, too
    large, not an object, not a regular file) is moved aside to ``hashes.json.bad-<time>``."""
    target = _cache_file()
    try:
        data = safejson.load_file(target, max_bytes=MAX_CACHE_BYTES)
    except FileNotFoundError:
        return {}
    except ValueError:
        data = None
    except OSError:
        return {}
    if isinstance(data, dict):
        return data
    with contextlib.suppress(OSError):
        os.replace(target, target.with_name(f"{target.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}"))
    return {}


def _save_cache(cache: dict[str, dict[str, object]]) -> None:
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hashes-", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(cache, fh)
        os.replace(tmp, target)
    except OSError:
        pass  # a cache that cannot be written only costs time


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Full sha256 hex digest of a file, cached by resolved path, size and mtime."""
    path = Path(path).resolve()
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read below forever
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    key = str(path)
    with _LOCK:
        entry = _load_cache().get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _LOCK:
        cache = _load_cache()
        cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": value}
        _save_cache(cache)
    return value


def folder_sha256(folder: str | os.PathLike[str]) -> str:
    """Stable sha256 of a diffusers folder: over its weight files' paths and hashes."""
    folder = Path(folder)
    lines = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name.endswith(WEIGHT_SUFFIXES):
            lines.append(f"{file.relative_to(folder).as_posix()} {file_sha256(file)}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def model_sha256(path: str | os.PathLike[str]) -> str:
    path = Path(path)
    return folder_sha256(path) if path.is_dir() else file_sha256(path)
