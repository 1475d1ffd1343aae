"""API test helpers: the real server on 127.0.0.1 (a free port) over a real job queue, and a
stdlib HTTP client that runs in a thread while the test keeps Qt's event loop going (the
queue and the API service live in the test's thread, as they live in the window's)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Reply:
    status: int
    data: Any
    raw: bytes


def pump_until(done: Callable[[], bool], timeout: float = 120.0) -> None:
    from PySide6.QtCore import QCoreApplication, QEventLoop

    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.002)


class Client:
    """``client.get(path)``, ``client.post(path, body)`` -> Reply; ``start_post`` runs one in
    the background (``.result()`` pumps events until it answers)."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token

    def _request(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return Reply(resp.status, parsed, payload)

    def start(self, method: str, path: str, body: Any = None, **kw: Any) -> Pending:
        return Pending(lambda: self._request(method, path, body, **kw))

    def get(self, path: str, **kw: Any) -> Reply:
        return self.start("GET", path, **kw).result()

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.start("POST", path, body, **kw).result()


class Pending:
    def __init__(self, fn: Callable[[], Reply]) -> None:
        self._out: list[Any] = []

        def run() -> None:
            try:
                self._out.append(fn())
            except BaseException as exc:
                self._out.append(exc)

        self.thread = threading.Thread(target=run, name="test-http-client")
        self.thread.start()

    @property
    def done(self) -> bool:
        return bool(self._out)

    def result(self, timeout: float = 240.0) -> Reply:
        pump_until(lambda: self.done, timeout)
        self.thread.join()
        out = self._out[0]
        if isinstance(out, BaseException):
            raise out
        return out


@dataclass
class Served:
    client: Client
    queue: Any
    service: Any
    server: Any
    out_dir: Path


@pytest.fixture
def serve(qapp: Any, tiny_model: Path, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(token="", fake=None)``: the API over a JobQueue running the real engine on
    the tiny model (or a FakeEngine with ``fake``, a FakeScript)."""
    from sdstudio.api.server import ApiServer
    from sdstudio.api.service import ApiService
    from sdstudio.core.settings import EngineSettings, Settings
    from sdstudio.testing.fake_engine import fake_engine_factory
    from sdstudio.worker import JobQueue

    made: list[Served] = []

    def make(token: str = "", fake: Any = None, cors: tuple[str, ...] = (),
             max_body: int | None = None, **engine: Any) -> Served:
        loras = tmp_path / "loras"
        loras.mkdir(exist_ok=True)
        settings = Settings(output_dir=str(tmp_path / "out"), engine=EngineSettings(
            default_model=str(tiny_model), lora_dirs=(str(loras),), **engine))
        factory = fake_engine_factory(fake) if fake is not None else None
        queue = JobQueue(engine_factory=factory, settings=settings.engine)
        queue.set_output(str(settings.output_path), settings.filename_pattern)
        service = ApiService(queue, settings)
        server = ApiServer(service, "127.0.0.1", 0, token, cors,
                           **({"max_body": max_body} if max_body else {}))
        queue.start()
        server.start()
        served = Served(Client(server.port, token), queue, service, server, settings.output_path)
        made.append(served)
        return served

    yield make
    for s in made:
        s.service.abort_all()
        s.server.stop()
        s.queue.shutdown(20_000)


def decode_png(text: str) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def b64_png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
