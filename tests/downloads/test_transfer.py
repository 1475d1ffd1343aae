"""sdstudio.downloads.download against a file server on 127.0.0.1: complete, resumed,
restarted, retried, refused."""

from __future__ import annotations

import hashlib
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError
from sdstudio.downloads import (
    DownloadError,
    DownloadProgress,
    DownloadSource,
    Licence,
    download,
    transfer,
)
from tests.downloads.helpers import Server, payload

DATA = payload(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def _source(url: str, **kw: object) -> DownloadSource:
    return DownloadSource(url=url, filename=str(kw.pop("filename", "model.safetensors")),
                          kind=str(kw.pop("kind", "checkpoint")), **kw)  # type: ignore[arg-type]


def _work(dest: Path) -> list[str]:
    work = dest / transfer.WORK_DIR
    return sorted(p.name for p in work.iterdir()) if work.is_dir() else []


def test_full_download_lands_in_the_kind_folder(server: Server, online: None) -> None:
    from sdstudio.core import paths
    from sdstudio.engine.hashing import _load_cache

    url = server.add("/m.safetensors", DATA, etag='"e1"')
    seen: list[DownloadProgress] = []
    path = download(_source(url, sha256=SHA, size=len(DATA), kind="lora"), on_progress=seen.append)
    assert path == paths.model_dir("lora") / "model.safetensors"
    assert path.read_bytes() == DATA
    assert seen and seen[-1].done == len(DATA) and seen[-1].total == len(DATA)
    assert seen[-1].eta_s == 0
    assert _work(path.parent) == []  # no partial, no sidecar left
    cache = _load_cache()[str(path.resolve())]
    assert cache["sha256"] == SHA and cache["size"] == len(DATA)
    path.unlink()


def test_cancelled_midway_then_resumed_byte_identical(server: Server, online: None,
                                                      tmp_path: Path) -> None:
    url = server.add("/m.safetensors", DATA, etag='"v1"')
    cancel = CancelToken()

    def stop_halfway(p: DownloadProgress) -> None:
        if p.done >= len(DATA) // 2:
            cancel.cancel()

    with pytest.raises(CancelledError):
        download(_source(url, sha256=SHA), dest_dir=tmp_path, on_progress=stop_halfway,
                 cancel=cancel)
    part = tmp_path / ".downloads" / "model.safetensors.part"
    kept = part.stat().st_size
    assert 0 < kept < len(DATA) and not (tmp_path / "model.safetensors").exists()
    server.requests.clear()
    path = download(_source(url, sha256=SHA), dest_dir=tmp_path)
    assert path.read_bytes() == DATA
    ranges = [h.get("Range") for _, _, h in server.requests]
    assert ranges == [f"bytes={kept}-"]
    assert server.requests[0][2].get("If-Range") == '"v1"'


def test_dropped_connection_is_retried_and_resumed(server: Server, online: None,
                                                   tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA, etag='"v1"', drop_after=50_000, drops=2)
    path = download(_source(url, sha256=SHA, filename="m.safetensors"), dest_dir=tmp_path)
    assert path.read_bytes() == DATA
    ranges = [h.get("Range") for _, _, h in server.requests]
    assert ranges == [None, "bytes=50000-", "bytes=100000-"]


def test_server_closes_early_every_time_keeps_the_partial_for_later(
        server: Server, online: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "RETRIES", 2)
    # progress, progress (the count starts again), then nothing until RETRIES run out
    url = server.add("/m.bin", DATA, etag='"v1"', drop_plan=[40_000, 40_000, 0, 0, 0])
    with pytest.raises(DownloadError, match=r"dropped 3 times.*resume"):
        download(_source(url), dest_dir=tmp_path)
    assert (tmp_path / ".downloads" / "model.safetensors.part").stat().st_size == 80_000
    assert len(server.requests) == 4  # 40000, 40000, then two that brought nothing
    path = download(_source(url, sha256=SHA), dest_dir=tmp_path)  # a later run: resumed
    assert path.read_bytes() == DATA


def test_server_without_range_support_restarts_from_zero(server: Server, online: None,
                                                         tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA, ranges=False, drop_after=60_000, drops=1)
    path = download(_source(url, sha256=SHA), dest_dir=tmp_path)
    assert path.read_bytes() == DATA
    assert [h.get("Range") for _, _, h in server.requests] == [None, "bytes=60000-"]


def test_changed_file_on_the_server_restarts(
        server: Server, online: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/m.bin", DATA, etag='"v1"', drop_after=70_000, drops=1)
    new = payload(200_000, seed=7)
    monkeypatch.setattr(transfer, "RETRIES", 0)
    with pytest.raises(DownloadError):
        download(_source(url), dest_dir=tmp_path)
    monkeypatch.setattr(transfer, "RETRIES", 4)
    server.add("/m.bin", new, etag='"v2"')  # If-Range no longer matches: whole file sent
    path = download(_source(url), dest_dir=tmp_path)
    assert path.read_bytes() == new


def test_wrong_sha256_is_refused_and_removed(server: Server, online: None,
                                             tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA)
    with pytest.raises(DownloadError, match=r"sha256 mismatch.*removed") as err:
        download(_source(url, sha256="0" * 64), dest_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == [] or _work(tmp_path) == []
    assert not (tmp_path / "model.safetensors").exists()


def test_size_other_than_expected_is_refused_before_reading(server: Server, online: None,
                                                             tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA)
    with pytest.raises(DownloadError, match="300000 bytes, 12 were expected"):
        download(_source(url, size=12), dest_dir=tmp_path)


def test_redirect_loop_is_refused(server: Server, online: None, tmp_path: Path) -> None:
    server.redirects["/a"] = server.url("/b")
    server.redirects["/b"] = server.url("/a")
    with pytest.raises(DownloadError, match="redirect loop"):
        download(_source(server.url("/a")), dest_dir=tmp_path)


def test_too_many_redirects_are_refused(server: Server, online: None, tmp_path: Path) -> None:
    for i in range(8):
        server.redirects[f"/r{i}"] = server.url(f"/r{i + 1}")
    with pytest.raises(DownloadError, match="too many redirects"):
        download(_source(server.url("/r0")), dest_dir=tmp_path)


def test_redirect_to_plain_http_elsewhere_is_refused(server: Server, online: None,
                                                     tmp_path: Path) -> None:
    server.redirects["/a"] = "http://files.example.com/model.safetensors"
    with pytest.raises(DownloadError, match=r"refused redirect to http://files.example.com"):
        download(_source(server.url("/a")), dest_dir=tmp_path)


def test_redirect_drops_the_token_on_another_host(server: Server, online: None,
                                                  tmp_path: Path) -> None:
    # 127.0.0.1 -> localhost is another host name: the Authorization header stays behind
    port = server.base.rsplit(":", 1)[1]
    server.add("/real.bin", DATA)
    server.redirects["/a"] = f"http://localhost:{port}/real.bin"
    download(_source(server.url("/a"), headers=(("Authorization", "Bearer secret"),)),
             dest_dir=tmp_path)
    (first, second) = [h for _, _, h in server.requests]
    assert first.get("Authorization") == "Bearer secret"
    assert "Authorization" not in second


def test_plain_http_to_another_computer_is_refused(tmp_path: Path, online: None) -> None:
    with pytest.raises(DownloadError, match="only https"):
        download(_source("http://example.com/m.safetensors"), dest_dir=tmp_path)


def test_larger_than_free_space_refused_before_starting(
        server: Server, online: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.add("/m.bin", DATA)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="not enough free space"):
        download(_source(url, size=len(DATA)), dest_dir=tmp_path)
    assert server.requests == []  # nothing fetched
    with pytest.raises(DownloadError, match="not enough free space"):  # size from the server
        download(_source(url), dest_dir=tmp_path)
    assert _work(tmp_path) == []


def test_never_overwrites_identical_is_done_different_gets_a_new_name(
        server: Server, online: None, tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA)
    (tmp_path / "model.safetensors").write_bytes(DATA)
    assert download(_source(url, sha256=SHA), dest_dir=tmp_path) == tmp_path / "model.safetensors"
    assert server.requests == []  # known sha256 already there: nothing fetched
    assert download(_source(url), dest_dir=tmp_path) == tmp_path / "model.safetensors"
    (tmp_path / "other.safetensors").write_bytes(b"someone else's file")
    path = download(_source(url, filename="other.safetensors"), dest_dir=tmp_path)
    assert path == tmp_path / "other-2.safetensors" and path.read_bytes() == DATA
    assert (tmp_path / "other.safetensors").read_bytes() == b"someone else's file"


def test_verify_refusal_deletes_the_file(server: Server, online: None, tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA)

    def refuse(path: Path) -> None:
        assert path.read_bytes() == DATA  # the complete file, before it is moved
        raise ValueError("not a model")

    with pytest.raises(DownloadError, match="model.safetensors was downloaded but refused "
                                            r"\(ValueError: not a model\); it was deleted"):
        download(_source(url), dest_dir=tmp_path, verify=refuse)
    assert not (tmp_path / "model.safetensors").exists() and _work(tmp_path) == []


def test_licence_needing_acceptance(server: Server, online: None, tmp_path: Path) -> None:
    url = server.add("/m.bin", DATA)
    source = _source(url, licence=Licence("CreativeML Open RAIL-M", "https://x.test/l", True),
                     label="Stable Diffusion 1.5")
    with pytest.raises(DownloadError, match=r"Stable Diffusion 1.5 is under the CreativeML "
                                            r"Open RAIL-M licence.*https://x.test/l"):
        download(source, dest_dir=tmp_path)
    assert server.requests == []
    assert download(source, dest_dir=tmp_path, accept_licence=True).read_bytes() == DATA


def test_offline_is_refused_at_once(server: Server, tmp_path: Path, online: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.downloads import is_offline

    url = server.add("/m.bin", DATA)
    assert not is_offline()
    for var in ("HF_HUB_OFFLINE", "SDSTUDIO_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
        assert is_offline()
        with pytest.raises(DownloadError, match="offline"):
            download(_source(url), dest_dir=tmp_path)
        monkeypatch.delenv(var)
    assert server.requests == []


def test_http_errors_are_one_line(server: Server, online: None, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not found on the server \\(HTTP 404\\)"):
        download(_source(server.url("/missing.bin")), dest_dir=tmp_path)
    server.add("/gated.bin", b"", status=401)
    with pytest.raises(DownloadError, match=r"HTTP 401.*token"):
        download(_source(server.url("/gated.bin")), dest_dir=tmp_path)


def test_bad_file_names_are_refused() -> None:
    for name in ("../x.safetensors", "a/b.safetensors", ".hidden", "", "a\\b", "x\n.ckpt"):
        with pytest.raises(DownloadError):
            _source("https://example.com/x", filename=name)
    with pytest.raises(DownloadError, match="unknown kind"):
        _source("https://example.com/x", kind="plugin")
    assert "secret" not in repr(_source("https://example.com/x",
                                        headers=(("Authorization", "Bearer secret"),)))


def test_the_guard_refuses_other_addresses() -> None:
    import socket
    import urllib.request

    from tests.downloads.helpers import NetworkRefused

    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.com/", timeout=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkRefused):
            sock.connect(("10.255.255.1", 80))
    finally:
        sock.close()


def test_a_second_download_of_the_same_file_is_refused(server: Server, online: None,
                                                       tmp_path: Path) -> None:
    import threading
    import time

    url = server.add("/m.bin", DATA)
    started = threading.Event()

    def slowly(_sent: int) -> None:
        started.set()
        time.sleep(0.002)

    server.throttle = slowly
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(
        download(_source(url, sha256=SHA), dest_dir=tmp_path)))
    worker.start()
    try:
        assert started.wait(10)
        with pytest.raises(DownloadError, match="already being downloaded"):
            download(_source(url, sha256=SHA), dest_dir=tmp_path)
    finally:
        worker.join(30)
    assert results == [tmp_path / "model.safetensors"]
    assert _work(tmp_path) == []  # lock, partial and sidecar gone


def test_a_server_that_never_sends_the_same_file_is_given_up(
        server: Server, online: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # it says half the bytes are coming, then sends them all: restarted, then given up
    url = server.add("/m.bin", DATA)
    honest = transfer._int_header
    monkeypatch.setattr(transfer, "_int_header",
                        lambda value: None if (n := honest(value)) is None else n // 2)
    with pytest.raises(DownloadError, match="keeps sending a different file"):
        download(_source(url), dest_dir=tmp_path)
    assert len(server.requests) == transfer.MAX_RESTARTS + 1
