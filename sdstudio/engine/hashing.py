"""sha256 of model files, cached by (path, size, mtime) in ``paths.cache_dir()/hashes.json``.

AUTOMATIC1111's "Model hash" and "VAE hash" are the first 10 hex digits of the file's sha256,
"TI hashes" the first 12; "Lora hashes" the first 12 of the "addnet" hash (sha256 of a
safetensors file's tensor data, after its header; :func:`a1111_lora_hash`). A diffusers
folder has several weight files; its hash is the sha256 of the sorted list of
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
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def _cached_digest(path: str | os.PathLike[str], field: str,
                   compute: Callable[[BinaryIO, int], str]) -> str:
    """``compute(open file, size)`` of a regular file, cached by resolved path, size and mtime
    under ``field`` of the file's cache entry (a file changed on disk is hashed again)."""
    path = Path(path).resolve()
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read below forever
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    key = str(path)

    def current(entry: object) -> bool:
        return (isinstance(entry, dict) and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns)

    with _LOCK:
        entry = _load_cache().get(key)
    if current(entry) and isinstance(entry, dict) and isinstance(entry.get(field), str):
        return str(entry[field])
    with open(path, "rb") as fh:
        value = compute(fh, st.st_size)
    with _LOCK:
        cache = _load_cache()
        old = cache.get(key)
        fresh: dict[str, object] = (
            dict(old) if current(old) and isinstance(old, dict)
            else {"size": st.st_size, "mtime_ns": st.st_mtime_ns})
        fresh[field] = value
        cache[key] = fresh
        _save_cache(cache)
    return value


def record_sha256(path: str | os.PathLike[str], digest: str) -> None:
    """Put a sha256 computed elsewhere (while downloading the file) into the cache, so the
    listing need not read the file again."""
    path = Path(path).resolve()
    st = path.stat()
    with _LOCK:
        cache = _load_cache()
        cache[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        _save_cache(cache)


def _sha256_from(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Full sha256 hex digest of a file, cached by resolved path, size and mtime."""
    return _cached_digest(path, "sha256", lambda fh, _size: _sha256_from(fh))


def _tensor_data_sha256(fh: BinaryIO, size: int) -> str:
    head = fh.read(8)
    if len(head) != 8:
        raise OSError(errno.EINVAL, "not a safetensors file (shorter than 8 bytes)")
    start = 8 + int.from_bytes(head, "little")
    if start > size:
        raise OSError(errno.EINVAL, "not a safetensors file (header longer than the file)")
    fh.seek(start)
    return _sha256_from(fh)


def addnet_sha256(path: str | os.PathLike[str]) -> str:
    """kohya's / AUTOMATIC1111's "addnet" hash of a safetensors file: the sha256 of the bytes
    after the 8-byte header length and the JSON header (the tensor data only, so editing the
    metadata does not change it). Cached like :func:`file_sha256`."""
    return _cached_digest(path, "addnet_sha256", _tensor_data_sha256)


def a1111_lora_hash(path: str | os.PathLike[str], metadata_hash: str | None = None) -> str:
    """A1111 1.10's short LoRA hash for "Lora hashes": first 12 hex digits of kohya's
    ``sshs_model_hash`` metadata when the file has one (``metadata_hash``), else of
    :func:`addnet_sha256` for a ``.safetensors`` file (A1111 goes by the suffix), else of
    the whole file's sha256."""
    if metadata_hash:
        return metadata_hash[:12]
    if Path(path).suffix.lower() == ".safetensors":
        return addnet_sha256(path)[:12]
    return file_sha256(path)[:12]


def a1111_embedding_hash(path: str | os.PathLike[str]) -> str:
    """A1111's "TI hashes" entry: first 12 hex digits of the embedding file's sha256."""
    return file_sha256(path)[:12]


def a1111_vae_hash(path: str | os.PathLike[str]) -> str:
    """A1111's "VAE hash": first 10 hex digits of the VAE file's sha256."""
    return file_sha256(path)[:10]


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
