"""One file from an https URL into SD Studio's model folder: resumable, verified, never over
another file.

The transfer is plain HTTP (:mod:`http.client`), the same for every source, so progress,
cancel and resume behave alike:

- HTTPS only; plain http only to this computer (127.0.0.1, ::1, localhost), which the tests
  use. Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, each target checked the
  same way; a loop is refused; credentials are not sent on to another host.
- The bytes go to ``<dest>/.downloads/<name>.part`` with a JSON sidecar (url, ETag or
  Last-Modified, size). A later download of the same URL resumes with ``Range`` (+
  ``If-Range``); a server that answers with the whole file restarts it from zero.
- A dropped connection is retried with a growing pause, resuming where it stopped, until
  :data:`RETRIES` attempts in a row bring nothing. Cancelling keeps the partial file for the
  next attempt.
- The free space is checked against what is left to fetch before anything is written (from
  the known size, then from the server's).
- sha256 is computed while downloading and checked when known (a mismatch deletes the
  partial); the ``verify`` callback (the safe loader) runs on the complete file; only then is
  it moved into place, under its own name, or ``<stem>-2<suffix>``... when a different file
  has that name (an identical one already there is the result). The sha256 goes into the hash
  cache the model listing reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from sdstudio.core import paths, safejson
from sdstudio.core.cancel import CancelToken
from sdstudio.core.catalogue import check_filename
from sdstudio.core.errors import CancelledError, describe_error
from sdstudio.downloads.types import (
    OFFLINE_MESSAGE,
    DownloadError,
    DownloadProgress,
    DownloadSource,
    is_offline,
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_REDIRECTS = 5
RETRIES = 4  # attempts after one that dropped, in a row without progress
MAX_RESTARTS = 3  # from the first byte, when the server will not resume
BACKOFF_S = 1.0  # doubled after each retry
TIMEOUT_S = 30.0
CHUNK = 1024 * 1024
PROGRESS_EVERY_S = 0.2
FREE_SPACE_MARGIN = 64 * 1024 * 1024  # leave the disk this much
WORK_DIR = ".downloads"
MAX_NAME_TRIES = 100
_SECRET_HEADERS = frozenset({"authorization", "cookie"})
_USER_AGENT = "sdstudio-downloader"


def _ignore(_progress: DownloadProgress) -> None:
    pass


class _Dropped(Exception):
    """The connection broke mid-transfer (retried)."""


class _Restart(Exception):
    """The server will not resume: start again from the first byte."""


def check_url(url: str, what: str = "address") -> SplitResult:
    """``url`` split, if SD Studio may fetch it: https, or http to this computer."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise DownloadError(f"not a web address: {_short(url)}")
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return parts
    raise DownloadError(f"refused {what} {_short(url)}: only https downloads are allowed")


def _short(url: str) -> str:
    parts = urlsplit(url)  # no query string: it may carry a token
    text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _connect(parts: SplitResult) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port, timeout=TIMEOUT_S,
                                           context=ssl.create_default_context())
    return http.client.HTTPConnection(host, parts.port, timeout=TIMEOUT_S)


def open_url(url: str, headers: dict[str, str]
             ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """GET ``url`` following redirects by hand (checked, bounded, no loops). The caller
    closes the connection."""
    seen: set[str] = set()
    current = url
    sent = dict(headers)
    origin = (urlsplit(url).hostname or "").lower()
    for hop in range(MAX_REDIRECTS + 1):
        parts = check_url(current, "address" if hop == 0 else "redirect to")
        if current in seen:
            raise DownloadError(f"redirect loop at {_short(current)}")
        seen.add(current)
        if (parts.hostname or "").lower() != origin:  # tokens stay with their own site
            sent = {k: v for k, v in sent.items() if k.lower() not in _SECRET_HEADERS}
        conn = _connect(parts)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers=sent)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Dropped(_reason(exc)) from exc
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location") or ""
            conn.close()
            if not location:
                raise DownloadError(f"the server redirected without a target ({_short(current)})")
            current = urljoin(current, location.strip())
            continue
        return response, conn
    raise DownloadError(f"too many redirects (more than {MAX_REDIRECTS}) from {_short(url)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return describe_error(exc) if str(exc) else type(exc).__name__


# ------------------------------------------------------------------ file names from servers
_CD_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)
_CD_PLAIN = re.compile(r'filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]+)', re.IGNORECASE)
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def safe_filename(raw: str, fallback: str) -> str:
    """A plain file name from a name a server or a URL gave: the last path component, only
    letters, digits and ``-_.+()`` and spaces kept (others become ``_``), no leading dots, at
    most 150 characters, a model file suffix (else ``fallback``)."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if (c.isalnum() and c.isascii()) or c in "-_.+() " else "_" for c in name)
    name = re.sub(r"\.{2,}", ".", name).strip(" .")
    stem, dot, suffix = name.rpartition(".")
    if not dot or f".{suffix.lower()}" not in MODEL_FILE_SUFFIXES or not stem.strip(" ._"):
        return fallback
    name = f"{stem[:140]}.{suffix.lower()}"
    try:
        return check_filename(name)
    except ValueError:
        return fallback


def content_disposition_name(header: str | None) -> str | None:
    """The file name a Content-Disposition header gives (RFC 6266 ``filename*`` preferred);
    unsanitised: pass it through :func:`safe_filename`."""
    if not header:
        return None
    star = _CD_STAR.search(header)
    if star:
        charset = star.group(1).strip() or "utf-8"
        try:
            return unquote(star.group(2).strip().strip('"'), encoding=charset, errors="replace")
        except LookupError:
            return unquote(star.group(2).strip().strip('"'))
    plain = _CD_PLAIN.search(header)
    if plain:
        value = plain.group(1).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        return value
    return None


# ------------------------------------------------------------------------- the sidecar
@dataclass
class _State:
    url: str
    total: int | None = None
    etag: str = ""
    last_modified: str = ""
    server_name: str = ""


def _read_state(meta: Path, url: str) -> _State | None:
    try:
        data = safejson.load_file(meta, max_bytes=64 * 1024)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("url") != url:
        return None
    total = data.get("total")
    return _State(url=url, total=total if type(total) is int and total >= 0 else None,
                  etag=str(data.get("etag") or "")[:500],
                  last_modified=str(data.get("last_modified") or "")[:100],
                  server_name=str(data.get("server_name") or "")[:300])


def _write_state(meta: Path, state: _State) -> None:
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(state.__dict__), encoding="utf-8")
    os.replace(tmp, meta)


# ------------------------------------------------------------------------- the transfer
class _Transfer:
    def __init__(self, source: DownloadSource, part: Path, meta: Path, dest: Path,
                 on_progress: Callable[[DownloadProgress], None], cancel: CancelToken | None):
        self.source = source
        self.part = part
        self.meta = meta
        self.dest = dest
        self.on_progress = on_progress
        self.cancel = cancel
        self.state = _read_state(meta, source.url)
        self.hasher = hashlib.sha256()
        self.done = 0
        if self.state is not None and part.is_file():
            self.done = self._hash_existing()
        else:
            self._reset()
        self.started = time.monotonic()
        self.start_done = self.done
        self.last_report = -1e9

    def _hash_existing(self) -> int:
        done = 0
        with self.part.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                self.hasher.update(chunk)
                done += len(chunk)
        return done

    def _reset(self) -> None:
        self.state = _State(url=self.source.url)
        self.hasher = hashlib.sha256()
        self.done = 0
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.meta.unlink()

    def run(self) -> None:
        """Until the file is complete: retries a dropped connection (:data:`RETRIES` times in
        a row without progress), restarts when the server will not resume (at most
        :data:`MAX_RESTARTS` times)."""
        failures = restarts = 0
        progress_at = self.done
        while True:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            try:
                if self._attempt():
                    return
            except _Restart:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise DownloadError(f"{self.source.title}: the server keeps sending a "
                                        "different file; try again later") from None
                self._reset()
                continue
            except _Dropped as exc:
                failures = 1 if self.done > progress_at else failures + 1
                progress_at = self.done
                if failures > RETRIES:
                    raise DownloadError(
                        f"the connection dropped {failures} times ({exc}); "
                        f"{self.done} bytes are kept: download again to resume") from None
                self._pause(BACKOFF_S * 2 ** (failures - 1))

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            time.sleep(min(left, 0.1))

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        headers.update(self.source.headers)
        if self.done > 0 and self.state is not None:
            headers["Range"] = f"bytes={self.done}-"
            validator = (self.state.etag if self.state.etag and not self.state.etag.startswith("W/")
                         else self.state.last_modified)
            if validator:
                headers["If-Range"] = validator
        return headers

    def _attempt(self) -> bool:
        """One request; True when the file is complete."""
        response, conn = open_url(self.source.url, self._headers())
        try:
            return self._receive(response)
        finally:
            conn.close()

    def _receive(self, response: http.client.HTTPResponse) -> bool:
        status = response.status
        if status == 416 and self.done > 0:  # nothing after what we have
            if self.state is not None and self.state.total == self.done:
                return True
            raise _Restart()
        if status in (401, 403):
            raise DownloadError(
                f"the server refused {self.source.title} (HTTP {status}): it may need a token "
                "(the model manager's Download tab, Tokens) or its licence accepted on the "
                "website")
        if status == 404:
            raise DownloadError(f"not found on the server (HTTP 404): {_short(self.source.url)}")
        if status >= 500:
            raise _Dropped(f"server error HTTP {status}")
        if status not in (200, 206):
            raise DownloadError(f"the server answered HTTP {status} {response.reason}")
        encoding = (response.getheader("Content-Encoding") or "identity").lower()
        if encoding not in ("identity", ""):
            raise DownloadError(f"the server sent the file compressed ({encoding})")
        length = _int_header(response.getheader("Content-Length"))
        if status == 206:
            start, total = _content_range(response.getheader("Content-Range"))
            if start != self.done:
                raise _Restart()
        else:
            if self.done:
                self._reset()  # no resumption: from the start
            total = length
        assert self.state is not None
        if self.state.total is not None and total is not None and total != self.state.total:
            raise _Restart()  # the file changed on the server
        if total is not None and self.source.size is not None and total != self.source.size:
            raise DownloadError(
                f"the server's file is {total} bytes, {self.source.size} were expected: "
                "not the file that was asked for")
        if total is not None:
            check_free_space(self.dest, total - self.done)
        self.state.total = total
        self.state.etag = response.getheader("ETag") or self.state.etag
        self.state.last_modified = response.getheader("Last-Modified") or ""
        name = content_disposition_name(response.getheader("Content-Disposition"))
        if name:
            self.state.server_name = name[:300]
        try:
            _write_state(self.meta, self.state)
        except OSError as exc:
            raise DownloadError(f"cannot write in {self.dest}: {describe_error(exc)}") from exc
        return self._copy_body(response, total)

    def _copy_body(self, response: http.client.HTTPResponse, total: int | None) -> bool:
        with self.part.open("ab") as out:
            try:
                while True:
                    if self.cancel is not None and self.cancel.cancelled:
                        raise CancelledError("download cancelled; download again to resume")
                    try:  # what has arrived, at most CHUNK: cancel and progress stay prompt
                        chunk = response.read1(CHUNK if total is None
                                               else min(CHUNK, max(total - self.done, 0) or 1))
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Dropped(_reason(exc)) from exc
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise DownloadError(f"cannot write the download: {describe_error(exc)}"
                                            ) from exc
                    self.hasher.update(chunk)
                    self.done += len(chunk)
                    if total is not None and self.done > total:
                        raise _Restart()  # more than the server said: do not trust it
                    self._report(total)
            finally:
                out.flush()
                with contextlib.suppress(OSError):
                    os.fsync(out.fileno())
        if total is not None and self.done < total:
            raise _Dropped(f"the server closed the connection after {self.done} of {total} bytes")
        self._report(total, force=True)
        return True

    def _report(self, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < PROGRESS_EVERY_S:
            return
        self.last_report = now
        elapsed = max(now - self.started, 1e-6)
        speed = (self.done - self.start_done) / elapsed
        eta = (total - self.done) / speed if total is not None and speed > 0 else None
        self.on_progress(DownloadProgress(self.done, total, speed, eta))


def _int_header(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 0 else None


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not match:
        raise _Restart()
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def check_free_space(folder: Path, needed: int) -> None:
    """DownloadError when ``folder``'s disk has less than ``needed`` bytes (plus a margin)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed + FREE_SPACE_MARGIN > free:
        raise DownloadError(f"not enough free space in {folder}: {_gib(needed)} needed, "
                            f"{_gib(free)} free")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------- placement
def _existing_sha256(path: Path) -> str | None:
    try:
        from sdstudio.engine.hashing import file_sha256  # no torch

        return file_sha256(path)
    except OSError:
        return None


def _record_sha256(path: Path, digest: str) -> None:
    with contextlib.suppress(Exception):  # a cache that cannot be written only costs time
        from sdstudio.engine.hashing import record_sha256  # no torch

        record_sha256(path, digest)


def _candidates(name: str) -> list[str]:
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    return [name] + [f"{stem}-{i}{dot}{suffix}" for i in range(2, MAX_NAME_TRIES + 1)]


def place(tmp: Path, folder: Path, name: str, digest: str) -> Path:
    """Move the verified ``tmp`` into ``folder`` as ``name`` without overwriting: a file of
    that name with the same sha256 is the result (``tmp`` removed); a different one makes it
    ``<stem>-2<suffix>``, ``-3``..."""
    for candidate in _candidates(name):
        final = folder / candidate
        if final.exists() or final.is_symlink():
            if final.is_file() and _existing_sha256(final) == digest:
                tmp.unlink()
                return final
            continue
        try:
            os.link(tmp, final)  # fails if the name was taken meanwhile
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT, some shares): claim the name, then move
            try:
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            os.replace(tmp, final)
            return final
        tmp.unlink()
        return final
    raise DownloadError(f"no free file name for {name} in {folder}")


# ------------------------------------------------------------------------- one at a time
def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _only_download(lock: Path, title: str) -> Iterator[None]:
    """Hold ``lock`` (an OS file lock) while one download of a file runs: a second download
    of the same file (the window and a command, two windows) is refused at once instead of
    writing into the same partial file."""
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise DownloadError(f"{title} is already being downloaded (in SD Studio or "
                                "another sdstudio command)")
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not unlinked meanwhile
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise DownloadError(f"{title}: cannot lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


# --------------------------------------------------------------------------- the function
def download(source: DownloadSource, *, dest_dir: Path | None = None,
             on_progress: Callable[[DownloadProgress], None] = _ignore,
             cancel: CancelToken | None = None, verify: Callable[[Path], Any] | None = None,
             accept_licence: bool = False) -> Path:
    """Fetch ``source`` into ``dest_dir`` (default: SD Studio's folder for its kind) and
    return the final path. DownloadError (one line) when it cannot; CancelledError when
    cancelled (the partial file stays for the next attempt)."""
    if is_offline():
        raise DownloadError(OFFLINE_MESSAGE)
    licence = source.licence
    if licence is not None and licence.needs_acceptance and not accept_licence:
        raise DownloadError(f"{source.title} is under the {licence.name} licence, which must be "
                            f"accepted first: read it at {licence.url}")
    check_url(source.url)
    folder = Path(dest_dir) if dest_dir is not None else paths.model_dir(source.kind)
    existing = folder / source.filename
    if (not source.name_from_server and source.sha256 and existing.is_file()
            and _existing_sha256(existing) == source.sha256):
        return existing  # already here
    work = folder / WORK_DIR
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {work}: {describe_error(exc)}") from exc
    with _only_download(work / f"{source.filename}.lock", source.title):
        final = _fetch(source, folder, work, on_progress, cancel, verify)
    with contextlib.suppress(OSError):
        work.rmdir()  # only when empty
    return final


def _fetch(source: DownloadSource, folder: Path, work: Path,
           on_progress: Callable[[DownloadProgress], None], cancel: CancelToken | None,
           verify: Callable[[Path], Any] | None) -> Path:
    part = work / f"{source.filename}.part"
    meta = work / f"{source.filename}.part.json"
    transfer = _Transfer(source, part, meta, folder, on_progress, cancel)
    if source.size is not None:
        check_free_space(folder, source.size - transfer.done)
    transfer.run()

    digest = transfer.hasher.hexdigest()
    state = transfer.state
    if source.sha256 is not None and digest != source.sha256:
        _remove(part, meta)
        raise DownloadError(f"{source.title}: sha256 mismatch (expected {source.sha256[:12]}…, "
                            f"got {digest[:12]}…); the download was removed")
    name = source.filename
    if source.name_from_server and state is not None and state.server_name:
        name = safe_filename(state.server_name, source.filename)
    if verify is not None:
        try:
            verify(part)
        except CancelledError:
            raise
        except Exception as exc:
            _remove(part, meta)
            raise DownloadError(f"{name} was downloaded but refused ({describe_error(exc)}); "
                                "it was deleted") from exc
    try:
        final = place(part, folder, name, digest)
    except OSError as exc:
        raise DownloadError(f"cannot move the download into {folder}: {describe_error(exc)}"
                            ) from exc
    _remove(meta)
    _record_sha256(final, digest)
    return final


def _remove(*files: Path) -> None:
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
