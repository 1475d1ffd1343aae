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

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_VERSION = 2  # also the batch key encoding (sdstudio.batch.plan); 1 = SD Studio 0.1
_RANK_FILE = re.compile(r"^manifest(?:\.rank(\d+))?\.jsonl$")


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
        except (UnicodeDecodeError, ValueError):
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
