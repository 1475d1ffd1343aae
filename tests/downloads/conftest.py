"""A file server and a fake Hugging Face hub on 127.0.0.1 (threads stopped after each test),
and a guard that refuses any connection to another address."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.downloads.helpers import NetworkRefused, Served, Server

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and host in LOOPBACK


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here may reach 127.0.0.1 only (connect and name look-ups)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise NetworkRefused(f"test tried to reach {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            raise NetworkRefused(f"test tried to reach {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (*LOOPBACK, None):
            raise NetworkRefused(f"test tried to look up {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SDSTUDIO_HOME per test: downloads land in its model folders, not the suite's."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("SDSTUDIO_HOME", str(root))
    return root


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.downloads import transfer

    monkeypatch.setattr(transfer, "BACKOFF_S", 0.01)
    monkeypatch.setattr(transfer, "TIMEOUT_S", 5.0)
    monkeypatch.setattr(transfer, "CHUNK", 4096)  # many chunks from small files
    monkeypatch.setattr(transfer, "PROGRESS_EVERY_S", 0.0)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1; download tests lift it (for 127.0.0.1)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SDSTUDIO_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: no idle threads

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = self.path
            server.requests.append((self.command, path, dict(self.headers.items())))
            if path in server.redirects:
                self.send_response(302)
                self.send_header("Location", server.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            hub = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+?)(\?.*)?", path)
            if hub and hub.group(1) in server.hub and hub.group(3) in server.hub[hub.group(1)]:
                data = server.hub[hub.group(1)][hub.group(3)]
                sha = hashlib.sha256(data).hexdigest()
                server.files.setdefault(f"/cdn/{sha}", Served(data, etag=f'"{sha}"'))
                self.send_response(302)
                self.send_header("Location", server.url(f"/cdn/{sha}"))
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", '"pointer-etag"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/?]+)(\?.*)?", path)
            if tree and tree.group(1) in server.hub:
                listing = [{"type": "file", "path": name, "size": len(data),
                            "oid": hashlib.sha1(data).hexdigest()}
                           for name, data in server.hub[tree.group(1)].items()]
                self._json(listing)
                return
            served = server.files.get(path.split("?")[0])
            if served is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._file(served, body)

        def _json(self, obj: Any) -> None:
            raw = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _file(self, served: Served, body: bool) -> None:
            data = served.data
            start = 0
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
            partial = bool(served.ranges and match and (
                if_range is None or served.etag is None or if_range == served.etag))
            if partial and match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(served.status)
            if served.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if served.etag:
                self.send_header("ETag", served.etag)
            if served.disposition:
                self.send_header("Content-Disposition", served.disposition)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            rest = data[start:]
            plan = served.drop_plan.pop(0) if served.drop_plan else None
            if plan is not None or (served.drop_after is not None and served.drops > 0):
                if plan is None:
                    served.drops -= 1
                self.wfile.write(rest[: plan if plan is not None else served.drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            for i in range(0, len(rest), 4096):
                self.wfile.write(rest[i:i + 4096])
                if server.throttle is not None:
                    server.throttle(i)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    httpd.daemon_threads = False
    httpd.block_on_close = True  # server_close() joins the request threads
    state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="test-http",
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def fake_hub(server: Server, online: None, monkeypatch: pytest.MonkeyPatch) -> Server:
    """``server`` also answers as a Hugging Face hub (HF_ENDPOINT points at it)."""
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return server
