"""Batch manifests: the crash-safe record of a batch run, kept in its output folder.

Layout (JSON Lines, one object per line, UTF-8):

- ``manifest.jsonl`` is written by the main process (rank 0). It holds **header** lines
  (``{"type": "header", ...}``: the source list's name and sha256, the plan fingerprint,
  options, defaults, and the seed of every work unit decided up front) and rank 0's
  **records**. The last complete header line is the current run.
- ``manifest.rank<k>.jsonl`` holds the records of process ``k`` in a multi-process run
  (``accelerate launch``). One writer per file: no locks, which also holds on network file
  systems where ``flock``/``O_APPEND`` are unreliable between machines. Readers merge every
  ``manifest*.jsonl`` of the folder.
- A **record** (``{"type": "done" | "failed", ...}``) names the run, the work unit (plan index,
  item index, line number, image index within the item, content key), the seed, and for a
  done unit the image file relative to the output folder; for a failed one the reason.

Every line is written with one ``write`` and then flushed and fsynced, after the image file
itself was written atomically (storage.png.save_image). A process killed at any moment leaves
at worst a torn last line, which readers ignore and the file's next writer cuts off, or an
image whose record is missing, which the batch runner adopts from the image's metadata.

A run's header lists the earlier runs whose records still count (``inherits``): a resume after
the list changed keeps the images already made for unchanged lines; a restart does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sdstudio.core.errors import SDStudioError, terminal_text

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_VERSION = 2  # also the batch key encoding (sdstudio.batch.plan); 1 = SD Studio 0.1
_RANK_FILE = re.compile(r"^manifest(?:\.rank(\d+))?\.jsonl$")
log = logging.getLogger(__name__)


def manifest_name(rank: int = 0) -> str:
    return MANIFEST_NAME if rank == 0 else f"manifest.rank{rank}.jsonl"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ManifestHeader:
    run_id: str
    source: str
    source_sha256: str
    fingerprint: str  # of the plan: every item's resolved request + images per prompt + policy
    seeds: tuple[int, ...]  # seed of every work unit, in plan order
    options: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inherits: tuple[str, ...] = ()  # earlier runs whose records still count
    created: str = ""
    version: int = MANIFEST_VERSION

    @property
    def total(self) -> int:
        return len(self.seeds)

    @property
    def runs(self) -> frozenset[str]:
        return frozenset((self.run_id, *self.inherits))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "header",
            "version": self.version,
            "run": self.run_id,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "fingerprint": self.fingerprint,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "total": self.total,
            "options": dict(self.options),
            "defaults": dict(self.defaults),
            "inherits": list(self.inherits),
            "seeds": list(self.seeds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManifestHeader:
        seeds = data["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise ValueError("seeds must be a list of integers")
        return cls(
            run_id=str(data["run"]),
            source=str(data.get("source", "")),
            source_sha256=str(data.get("source_sha256", "")),
            fingerprint=str(data["fingerprint"]),
            seeds=tuple(seeds),
            options=dict(data.get("options") or {}),
            defaults=dict(data.get("defaults") or {}),
            inherits=tuple(str(r) for r in data.get("inherits") or ()),
            created=str(data.get("created", "")),
            version=int(data.get("version", MANIFEST_VERSION)),
        )


@dataclass(frozen=True)
class UnitRecord:
    """One finished work unit (``status`` "done" or "failed")."""

    status: str
    run: str
    unit: int  # index in the run's plan
    item: int  # index of the prompt item (good lines only, in order)
    line_no: int
    image: int  # image index within the item
    key: str  # content key of the item (stable across edits of other lines)
    seed: int
    file: str | None = None  # relative to the output folder, "/"-separated
    reason: str | None = None
    rank: int = 0
    elapsed_s: float = 0.0
    adopted: bool = False  # found on disk after a crash between the image and its record

    @property
    def slot(self) -> tuple[str, int]:
        return (self.key, self.image)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.status,
            "run": self.run,
            "unit": self.unit,
            "item": self.item,
            "line": self.line_no,
            "image": self.image,
            "key": self.key,
            "seed": self.seed,
            "rank": self.rank,
        }
        if self.file is not None:
            data["file"] = self.file
        if self.reason is not None:
            data["reason"] = self.reason
        if self.elapsed_s:
            data["elapsed_s"] = round(self.elapsed_s, 4)
        if self.adopted:
            data["adopted"] = True
        data["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UnitRecord:
        status = data["type"]
        if status not in ("done", "failed"):
            raise ValueError(status)
        return cls(
            status=status,
            run=str(data["run"]),
            unit=int(data["unit"]),
            item=int(data["item"]),
            line_no=int(data.get("line", 0)),
            image=int(data["image"]),
            key=str(data["key"]),
            seed=int(data["seed"]),
            file=safe_relative_file(data.get("file")),
            reason=None if data.get("reason") is None else str(data.get("reason")),
            rank=int(data.get("rank", 0)),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            adopted=bool(data.get("adopted", False)),
        )


def safe_relative_file(value: Any) -> str | None:
    """A record's ``file`` when it is a plain relative path inside the output folder
    ("sub/00001-5.png"); None for anything else (absolute, ``..``, a drive, not text), so a
    manifest never makes SD Studio look at a file outside its folder."""
    if not isinstance(value, str) or not value or "\x00" in value or "\\" in value:
        return None
    parts = PurePosixPath(value).parts
    if PurePosixPath(value).is_absolute() or ":" in parts[0] or any(
            p in ("..", ".") for p in parts):
        return None
    return value


@dataclass(frozen=True)
class ManifestState:
    """Everything the manifest files of a folder say, merged."""

    folder: Path
    header: ManifestHeader | None
    records: tuple[UnitRecord, ...]  # of the current run and the runs it inherits, file order
    torn_lines: int = 0  # incomplete or unreadable lines skipped

    def done(self, check_files: bool = True) -> dict[tuple[str, int], UnitRecord]:
        """(key, image) -> the first done record, for units whose file is still there."""
        out: dict[tuple[str, int], UnitRecord] = {}
        for rec in self.records:
            if rec.status != "done" or rec.slot in out:
                continue
            if check_files and (not rec.file or not (self.folder / rec.file).is_file()):
                continue
            out[rec.slot] = rec
        return out

    def failed(self) -> dict[tuple[str, int], UnitRecord]:
        """(key, image) -> the last failure of a unit that is not done."""
        done = self.done(check_files=False)
        return {r.slot: r for r in self.records if r.status == "failed" and r.slot not in done}

    def files(self) -> set[str]:
        return {r.file for r in self.records if r.status == "done" and r.file}


def manifest_files(folder: Path) -> list[Path]:
    """manifest.jsonl first, then the rank files by rank."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found: list[tuple[int, Path]] = []
    for name in names:
        m = _RANK_FILE.match(name)
        if m:
            found.append((int(m.group(1) or 0), folder / name))
    return [p for _, p in sorted(found)]


def _lines(path: Path) -> Iterator[dict[str, Any] | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # torn, not UTF-8, not JSON, nested too deep
            yield None
            continue
        yield obj if isinstance(obj, dict) else None


def read_manifest(folder: str | os.PathLike[str]) -> ManifestState:
    """Merge the folder's manifest files. Torn or foreign lines are skipped (and counted)."""
    folder = Path(folder)
    header: ManifestHeader | None = None
    raw_records: list[UnitRecord] = []
    torn = 0
    for path in manifest_files(folder):
        is_main = path.name == MANIFEST_NAME
        for obj in _lines(path):
            if obj is None:
                torn += 1
                continue
            try:
                if obj.get("type") == "header":
                    if is_main:
                        header = ManifestHeader.from_json(obj)
                elif obj.get("type") in ("done", "failed"):
                    raw_records.append(UnitRecord.from_json(obj))
            except (KeyError, TypeError, ValueError):
                torn += 1
    records: tuple[UnitRecord, ...] = ()
    if header is not None:
        runs = header.runs
        records = tuple(r for r in raw_records if r.run in runs)
    return ManifestState(folder, header, records, torn)


class ManifestWriter:
    """Appends to one process's manifest file; every line is written whole, then fsynced."""

    def __init__(self, folder: str | os.PathLike[str], rank: int = 0) -> None:
        self.folder = Path(folder)
        self.rank = rank
        self.path = self.folder / manifest_name(rank)
        self.folder.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._cut_torn_tail()
            if not existed:
                fsync_dir(self.folder)
        except BaseException:
            os.close(self._fd)
            raise

    def _cut_torn_tail(self) -> None:
        """A process killed mid-write may leave a last line without its newline: cut it."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        block = min(size, 1 << 20)
        os.lseek(self._fd, size - block, os.SEEK_SET)
        tail = os.read(self._fd, block)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = (size - block + cut + 1) if cut >= 0 else (0 if block == size else size)
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)

    def append(self, obj: Mapping[str, Any]) -> None:
        line = (json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def write_header(self, header: ManifestHeader) -> None:
        if self.rank != 0:
            raise ValueError("only the main process writes the manifest header")
        self.append(header.to_json())

    def write_record(self, record: UnitRecord) -> None:
        self.append(record.to_json())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Temp files of storage.png.save_image (".sdstudio-XXXX.tmp"): a process killed while writing
# an image leaves one behind; the next batch run in the folder removes them before it starts.
_TEMP = re.compile(r"^\.sdstudio-.*\.tmp$")


def remove_stale_temp_files(folder: Path, subfolders: Sequence[str] = ("",)) -> list[Path]:
    removed: list[Path] = []
    for sub in subfolders:
        base = folder / sub if sub else folder
        try:
            names = os.listdir(base)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if _TEMP.match(name):
                path = base / name
                try:
                    path.unlink()
                    removed.append(path)
                except OSError:
                    pass
    return removed


def image_files(folder: Path, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Every .png under ``folder`` (relative, "/"-separated), except those in ``skip``."""
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_root = os.path.relpath(root, folder)
        for name in files:
            if not name.lower().endswith(".png") or name.startswith("."):
                continue
            rel = name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/")
            if rel not in skip:
                out.append(rel)
    return sorted(out)


# ============================================================================ the batch lock
# A batch holds an exclusive OS-level lock on its output folder for its whole run, so a second
# batch into the same folder is refused at once instead of making every image a second time.
# Not ``.sdstudio.lock``: storage.png locks that one around each image's naming only (every
# writer of the folder, a few milliseconds per image), and a run-long lock on it would block
# the run's own saves. The OS drops the lock when its process dies (kill -9 too), so a stale
# lock is taken over by the next run; the info file beside it (pid, host, start, what, run) is
# what the refusal names, written whole (temp file + rename) and read as untrusted data. A
# multi-process run holds it as a group: rank 0 takes it and writes the run id and the
# launcher's group id into the info; the other ranks check both and join (BatchRunner.prepare).
BATCH_LOCK_NAME = ".sdstudio-batch.lock"
BATCH_LOCK_INFO = ".sdstudio-batch.json"
_LOCK_INFO_MAX_BYTES = 64 * 1024
_LOCK_FIELD_MAX = 200
_LOCKING_UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS,
                                  errno.EINVAL})
LOCK_OWNERS = {"cli": "sdstudio batch on the command line",
               "window": "the batch tab of an SD Studio window"}


@dataclass(frozen=True)
class LockInfo:
    """Who holds a batch folder's lock (from its info file: untrusted, sanitised)."""

    pid: int
    host: str
    started: str
    what: str  # "cli" | "window"
    run: str = ""  # the run id, once decided
    group: str = ""  # a multi-process run's launcher group ("" for one process)
    world: int = 1

    def describe(self) -> str:
        what = LOCK_OWNERS.get(self.what, self.what or "another program")
        procs = f", {self.world} processes" if self.world > 1 else ""
        run = f", run {self.run}" if self.run else ""
        return f"{what}, pid {self.pid} on {self.host or '?'}{procs}, started {self.started}{run}"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "started": self.started, "what": self.what,
                "run": self.run, "group": self.group, "world": self.world}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockInfo:
        def text(name: str) -> str:
            value = data.get(name, "")
            return terminal_text(value[:_LOCK_FIELD_MAX], strict=True) if isinstance(
                value, str) else ""

        pid, world = data.get("pid"), data.get("world", 1)
        return cls(pid if isinstance(pid, int) and not isinstance(pid, bool) else -1,
                   text("host"), text("started"), text("what"), text("run"), text("group"),
                   world if isinstance(world, int) and not isinstance(world, bool) else 1)


class FolderInUseError(SDStudioError):
    """Another batch holds the output folder's lock."""

    def __init__(self, folder: Path, holder: LockInfo | None, why: str = "") -> None:
        who = holder.describe() if holder is not None else "its details are not written yet"
        super().__init__(
            f"the output folder {terminal_text(str(folder), strict=True)} is in use by another "
            f"batch ({who}){why}; wait for it to finish, or choose another output folder")
        self.folder = folder
        self.holder = holder


def read_lock_info(folder: str | os.PathLike[str]) -> LockInfo | None:
    """The info of the folder's batch lock (None when absent or unreadable)."""
    try:
        with open(Path(folder) / BATCH_LOCK_INFO, "rb") as fh:
            raw = fh.read(_LOCK_INFO_MAX_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _LOCK_INFO_MAX_BYTES:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return LockInfo.from_json(data) if isinstance(data, dict) else None


class BatchLock:
    """The exclusive lock of a batch output folder (see above). ``acquire`` raises
    :class:`FolderInUseError` when another batch holds it; ``stale`` is the info a dead holder
    left (its lock went with its process), if any."""

    def __init__(self, folder: Path, fh: BinaryIO, info: LockInfo, locked: bool,
                 stale: LockInfo | None) -> None:
        self.folder = folder
        self.info = info
        self.stale = stale
        self.locked = locked  # False on a file system without locks (the info still tells)
        self._fh: BinaryIO | None = fh

    @classmethod
    def acquire(cls, folder: str | os.PathLike[str], what: str = "cli", group: str = "",
                world: int = 1) -> BatchLock:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / BATCH_LOCK_NAME, "a+b")  # noqa: SIM115 (held for the whole run)
        try:
            locked = _try_lock(fh)
        except BaseException:
            fh.close()
            raise
        if locked is False:
            fh.close()
            raise FolderInUseError(folder, read_lock_info(folder))
        stale = read_lock_info(folder)
        info = LockInfo(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        what, group=group, world=world)
        lock = cls(folder, fh, info, locked is True, stale)
        try:
            lock._write_info()
        except BaseException:
            lock.release()
            raise
        return lock

    def set_run(self, run_id: str) -> None:
        """Name the run in the info (the other processes of a group join by it)."""
        self.info = dataclasses.replace(self.info, run=run_id)
        self._write_info()

    def _write_info(self) -> None:
        data = json.dumps(self.info.to_json(), ensure_ascii=True).encode()
        tmp = self.folder / f".sdstudio-lockinfo-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.folder / BATCH_LOCK_INFO)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if read_lock_info(self.folder) == self.info:
                with contextlib.suppress(OSError):
                    (self.folder / BATCH_LOCK_INFO).unlink()
        finally:
            fh.close()  # closing drops the lock

    def __enter__(self) -> BatchLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_group_lock(folder: str | os.PathLike[str], run_id: str, group: str) -> LockInfo:
    """For the other processes of a multi-process run: the folder's lock must be held (by the
    group's main process) for ``run_id`` and ``group``; else FolderInUseError."""
    folder = Path(folder)
    info = read_lock_info(folder)
    try:
        with open(folder / BATCH_LOCK_NAME, "a+b") as fh:
            free = _try_lock(fh) is True  # closing the file drops it again
    except OSError:
        free = False
    if free or info is None:
        raise FolderInUseError(folder, info, ", and this process's main process does not "
                               "hold it")
    if info.run != run_id or info.group != group:
        raise FolderInUseError(folder, info)
    return info


def _try_lock(fh: BinaryIO) -> bool | None:
    """Take the exclusive lock without waiting: True, False (held elsewhere), or None when the
    file system has no locks."""
    try:
        if sys.platform == "win32":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        if exc.errno in _LOCKING_UNSUPPORTED:
            log.warning("no file locking in %s (%s): a second batch into it is not refused",
                        fh.name, exc)
            return None
        raise
    return True
