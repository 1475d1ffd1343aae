"""Model folders: list the models in them, hash them in the background, resolve names.

A model is a single checkpoint file (``.safetensors``, ``.ckpt``, ``.pt``, ``.pth``) or a
diffusers folder (one holding ``model_index.json``; not descended into). Folders are scanned
recursively, as A1111's ``models/Stable-diffusion`` and ComfyUI's ``models/checkpoints`` are.

* Architecture of a single file from its tensor names and shapes only
  (:func:`sdstudio.engine.single_file.describe`: the safetensors header, no tensor data read);
  of a diffusers folder from its configs (:func:`sdstudio.engine.arch.detect_arch`, pure JSON).
  Files that are not checkpoints (a LoRA, a VAE, an embedding dropped in the wrong folder, a
  corrupt file) are listed with ``problem`` set and are never resolved as models.
* Short hash: AUTOMATIC1111's "Model hash", the first 10 hex digits of the file's sha256. A
  diffusers folder's hash is the sha256 over its sorted ``relative/path <sha256>`` lines of
  weight files (:func:`sdstudio.engine.hashing.folder_sha256`). Hashes are cached by (path,
  size, mtime) in ``paths.cache_dir()/hashes.json`` (atomic writes, shared with the engine);
  :func:`scan` reports cached ones at once and :class:`HashJob` computes the rest in a
  background thread pool.
* Names: a single file is named by its path relative to its model folder without the suffix
  (``sub/dreamshaper_8``), a folder by its relative path. :func:`resolve_model_name` accepts that,
  the bare stem, the file name with its suffix, or a short hash.

No torch is imported here: ``sdstudio models`` stays fast.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sdstudio.core.errors import ModelError
from sdstudio.engine import checkpoint, hashing, single_file
from sdstudio.engine.arch import detect_arch

MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
Kind = Literal["single-file", "diffusers"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    kind: Kind
    arch: str  # "sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl", ... or "?" (see problem)
    size_bytes: int
    short_hash: str | None = None
    problem: str = ""  # why this is not a loadable model ("" = fine)

    @property
    def title(self) -> str:
        """A1111-style title: ``name [hash]``."""
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


# ------------------------------------------------------------------------------ hashes
def cached_hash(path: Path, cache: Mapping[str, object] | None = None) -> str | None:
    """The cached full sha256 of a file or diffusers folder, without computing anything.
    ``cache``: the hash cache already read (saves re-reading it per model)."""
    path = Path(path)
    cache = hashing._load_cache() if cache is None else cache
    try:
        if path.is_dir():
            weights = sorted(p for p in path.rglob("*")
                             if p.is_file() and p.name.endswith(hashing.WEIGHT_SUFFIXES))
            if not weights or any(_cached_file_hash(p, cache) is None for p in weights):
                return None
            return hashing.folder_sha256(path)  # every part cached: cheap
        return _cached_file_hash(path, cache)
    except OSError:
        return None


def _cached_file_hash(path: Path, cache: Mapping[str, object]) -> str | None:
    resolved = path.resolve()
    st = resolved.stat()
    entry = cache.get(str(resolved))
    if (isinstance(entry, dict) and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
            and isinstance(entry.get("sha256"), str)):
        return str(entry["sha256"])
    return None


class HashJob:
    """Computes the missing short hashes of ``entries`` in a background thread pool.

    ``on_hash(entry)`` is called (from a worker thread) with each entry once its hash is
    known. Use :meth:`wait` for the completed list, or :meth:`cancel` to stop early; the
    pool is always shut down by either (the job also works as a context manager)."""

    def __init__(self, entries: Sequence[ModelEntry],
                 on_hash: Callable[[ModelEntry], None] | None = None,
                 max_workers: int = 2) -> None:
        self._entries = list(entries)
        self._on_hash = on_hash
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers),
                                        thread_name_prefix="sdstudio-hash")
        self._futures: list[tuple[int, Future[ModelEntry]]] = [
            (i, self._pool.submit(self._hash_one, e))
            for i, e in enumerate(self._entries) if e.short_hash is None and not e.problem
        ]

    def _hash_one(self, entry: ModelEntry) -> ModelEntry:
        if self._stop.is_set():
            return entry
        try:
            done = replace(entry, short_hash=hashing.model_sha256(entry.path)[:10])
        except OSError:
            return entry
        if self._on_hash is not None:
            self._on_hash(done)
        return done

    def wait(self) -> list[ModelEntry]:
        try:
            for i, fut in self._futures:
                self._entries[i] = fut.result()
        finally:
            self._pool.shutdown(wait=True)
        return list(self._entries)

    def cancel(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HashJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


# -------------------------------------------------------------------------------- scan
def _folder_arch(folder: Path) -> tuple[str, str]:
    try:
        return detect_arch(folder), ""
    except Exception as exc:
        return "?", str(exc)


def _file_arch(path: Path) -> tuple[str, str]:
    try:
        if checkpoint.detect_format(path) == "torch-pickle":
            return "?", ""  # legacy pickles cannot be inspected without loading them
        return single_file.describe(path).label, ""
    except Exception as exc:
        return "?", str(exc)


def _walk(base: Path) -> Iterable[tuple[Path, Kind]]:
    """Model files and diffusers folders under ``base``. Symlinked folders are followed, but
    each real folder is walked once (by device and inode): links to a parent would otherwise
    make the walk exponential or endless."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(base, followlinks=True):
        here = Path(root)
        try:
            st = here.stat()
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if "model_index.json" in files and here != base:
            dirs[:] = []
            yield here, "diffusers"
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.lower().endswith(MODEL_FILE_SUFFIXES) and not f.startswith("."):
                yield here / f, "single-file"


def scan(dirs: Iterable[str | os.PathLike[str]], *, with_arch: bool = True) -> list[ModelEntry]:
    """Every model in ``dirs`` (recursively), sorted by name; cached hashes filled in."""
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    cache = hashing._load_cache()
    for folder in dirs:
        base = Path(folder).expanduser()
        if not base.is_dir():
            continue
        if (base / "model_index.json").is_file():  # the folder itself is a model
            items: Iterable[tuple[Path, Kind]] = [(base, "diffusers")]
            base = base.parent
        else:
            items = _walk(base)
        for path, kind in items:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            rel = path.relative_to(base).as_posix()
            if kind == "diffusers":
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                arch, problem = _folder_arch(path) if with_arch else ("", "")
                name = rel
            else:
                size = path.stat().st_size
                arch, problem = _file_arch(path) if with_arch else ("", "")
                name = rel[: -len(path.suffix)]
            sha = cached_hash(path, cache)
            entries.append(ModelEntry(name, path, kind, arch, size,
                                      sha[:10] if sha else None, problem))
    entries.sort(key=lambda e: e.name.lower())
    return entries


def hash_all(entries: Sequence[ModelEntry], max_workers: int = 2) -> list[ModelEntry]:
    """``entries`` with every short hash computed (blocking; uses the thread pool)."""
    return HashJob(entries, max_workers=max_workers).wait()


def resolve_model_name(name: str, dirs: Iterable[str | os.PathLike[str]]) -> Path | None:
    """A model named in the model folders: by relative name (``sub/model``), stem, file name,
    or short hash (cached or computed). Exact matches first, then case-insensitive."""
    wanted = name.strip().replace("\\", "/")
    if not wanted:
        return None
    entries = scan(dirs, with_arch=False)
    for exact in (True, False):
        def same(a: str, b: str, exact: bool = exact) -> bool:
            return a == b if exact else a.lower() == b.lower()

        for e in entries:
            candidates = [e.name, e.path.name, e.name.rsplit("/", 1)[-1]]
            if e.kind == "single-file":
                candidates.append(e.name + e.path.suffix)
            if any(same(c, wanted) for c in candidates):
                return e.path
    hexdigits = set("0123456789abcdef")
    if len(wanted) in (8, 10, 12, 64) and set(wanted.lower()) <= hexdigits:
        for e in hash_all(entries):
            if e.short_hash and hashing.model_sha256(e.path).startswith(wanted.lower()):
                return e.path
    return None


def require_model(name: str, dirs: Sequence[str]) -> Path:
    found = resolve_model_name(name, dirs)
    if found is None:
        where = ", ".join(dirs) if dirs else "no model folder is configured"
        raise ModelError(f"model {name!r} was not found in the model folders ({where})")
    return found
