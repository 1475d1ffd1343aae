"""The catalogue of starter models shipped as data (``resources/model_catalogue.json``).

Each entry names one file: its kind (a :data:`sdstudio.core.paths.MODEL_KINDS` key, which
picks the folder it is downloaded into), the architecture it belongs to (the engine's names:
``sd1``, ``sd2``, ``sdxl``...), where it comes from (a Hugging Face repository, file and
revision, or a direct https URL), its size and sha256 (``null`` where not known: the download
then computes and records them), its licence and what it is for. The file is data: it is
parsed with limits (:mod:`sdstudio.core.safejson`) and every value is checked; nothing in it
becomes a path, a class or code. Pure Python: no network, no Qt, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sdstudio.core import paths, safejson
from sdstudio.core.errors import SDStudioError

CATALOGUE_FILE = "model_catalogue.json"
MAX_CATALOGUE_BYTES = 1024 * 1024
# engine/arch.py's ARCHS (a test keeps them equal), and "any": a file not tied to one
ARCHITECTURES = ("sd1", "sd1-inpaint", "sd2", "sd2-inpaint", "sd2-v", "sdxl", "sdxl-inpaint", "any")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class CatalogueError(SDStudioError):
    """The catalogue file is damaged: one line naming the entry and the value."""


@dataclass(frozen=True)
class Licence:
    name: str
    url: str
    needs_acceptance: bool


@dataclass(frozen=True)
class CatalogueEntry:
    id: str
    name: str
    kind: str
    architecture: str
    filename: str  # the file's name once downloaded
    description: str
    licence: Licence
    hf_repo: str = ""  # a Hugging Face repository ("org/name") ...
    hf_file: str = ""  # ... the file's path in it ...
    revision: str = "main"  # ... and the revision (a branch or a commit)
    url: str = ""  # or a direct https URL
    size: int | None = None
    sha256: str | None = None


def _text(entry: Mapping[str, Any], key: str, where: str, *, required: bool = True,
          limit: int = 500) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise CatalogueError(f"{where}: {key} must be one line of text")
    if required and not value.strip():
        raise CatalogueError(f"{where}: {key} is missing")
    return value


def _https(url: str, where: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CatalogueError(f"{where}: {key} must be an https URL")
    return url


def check_filename(name: str) -> str:
    """A plain file name: no folder separators, not hidden, no ``..``, no control characters
    (ValueError otherwise)."""
    if (not name or len(name) > 200 or name in (".", "..") or name.startswith(".")
            or any(c in name for c in "/\\:\0") or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or ".." in name):
        raise ValueError(f"not a plain file name: {name!r}")
    return name


def _entry(raw: Any, index: int) -> CatalogueEntry:
    where = f"catalogue entry {index + 1}"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where} is not an object")
    entry_id = _text(raw, "id", where, limit=64)
    if not _ID_RE.fullmatch(entry_id):
        raise CatalogueError(f"{where}: id {entry_id!r} is not lower-case letters, digits, . _ -")
    where = f"catalogue entry {entry_id!r}"
    kind = _text(raw, "kind", where)
    if kind not in paths.MODEL_KINDS:
        raise CatalogueError(f"{where}: unknown kind {kind!r}")
    arch = _text(raw, "architecture", where)
    if arch not in ARCHITECTURES:
        raise CatalogueError(f"{where}: unknown architecture {arch!r}")
    source = raw.get("source")
    if not isinstance(source, dict):
        raise CatalogueError(f"{where}: source is missing")
    hf_repo = _text(source, "hf_repo", where, required=False, limit=200)
    url = _text(source, "url", where, required=False, limit=2000)
    hf_file = revision = ""
    if bool(hf_repo) == bool(url):
        raise CatalogueError(f"{where}: source needs either hf_repo + file or url")
    if hf_repo:
        if not _REPO_RE.fullmatch(hf_repo) or ".." in hf_repo:
            raise CatalogueError(f"{where}: hf_repo {hf_repo!r} is not org/name")
        hf_file = _text(source, "file", where, limit=300)
        if hf_file.startswith("/") or any(p in ("", ".", "..") for p in hf_file.split("/")):
            raise CatalogueError(f"{where}: file {hf_file!r} is not a path inside the repository")
        revision = _text(source, "revision", where, required=False, limit=64) or "main"
        if not _REVISION_RE.fullmatch(revision):
            raise CatalogueError(f"{where}: revision {revision!r} is not a branch or commit")
    else:
        _https(url, where, "url")
    filename = raw.get("filename") or (hf_file.rsplit("/", 1)[-1] if hf_file else "")
    try:
        check_filename(filename if isinstance(filename, str) else "")
    except ValueError:
        raise CatalogueError(f"{where}: filename {filename!r} is not a plain file name") from None
    size = raw.get("size")
    if size is not None and (type(size) is not int or size <= 0):
        raise CatalogueError(f"{where}: size must be a positive number of bytes or null")
    sha256 = raw.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256)):
        raise CatalogueError(f"{where}: sha256 must be 64 lower-case hex digits or null")
    lic = raw.get("licence")
    if not isinstance(lic, dict) or not isinstance(lic.get("needs_acceptance"), bool):
        raise CatalogueError(f"{where}: licence needs name, url and needs_acceptance")
    licence = Licence(_text(lic, "name", where, limit=100),
                      _https(_text(lic, "url", where, limit=500), where, "licence url"),
                      lic["needs_acceptance"])
    return CatalogueEntry(
        id=entry_id, name=_text(raw, "name", where, limit=120), kind=kind, architecture=arch,
        filename=filename, description=_text(raw, "description", where), licence=licence,
        hf_repo=hf_repo, hf_file=hf_file, revision=revision or "main", url=url, size=size,
        sha256=sha256)


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[CatalogueEntry, ...]

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> CatalogueEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def of_kind(self, kind: str) -> list[CatalogueEntry]:
        return [e for e in self.entries if e.kind == kind]


def parse_catalogue(data: Any) -> Catalogue:
    """A catalogue from parsed JSON (``{"entries": [...]}``); CatalogueError when damaged."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise CatalogueError("the model catalogue has no list of entries")
    entries = tuple(_entry(raw, i) for i, raw in enumerate(data["entries"]))
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise CatalogueError(f"catalogue entry {e.id!r} appears twice")
        seen.add(e.id)
    return Catalogue(entries)


def catalogue_path() -> Path:
    return paths.resources_dir() / CATALOGUE_FILE


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The shipped catalogue (or the one at ``path``); CatalogueError when it cannot be used."""
    target = path or catalogue_path()
    try:
        data = safejson.load_file(target, max_bytes=MAX_CATALOGUE_BYTES)
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"the model catalogue cannot be read: {exc}") from None
    return parse_catalogue(data)
