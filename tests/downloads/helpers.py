"""Shared helpers for the download tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class NetworkRefused(OSError):
    """A test tried to reach an address other than this computer's."""


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` deterministic pseudo-random bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


@dataclass
class Served:
    data: bytes
    etag: str | None = None
    ranges: bool = True
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 0  # ... this many times
    drop_plan: list[int] = field(default_factory=list)  # or: bytes sent before each drop
    disposition: str | None = None
    status: int = 200


@dataclass
class Server:
    base: str
    files: dict[str, Served] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hub: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> {file: bytes}
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    throttle: Callable[[int], None] | None = None  # called after each chunk sent

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes, **kw: Any) -> str:
        self.files[path] = Served(data, **kw)
        return self.url(path)
