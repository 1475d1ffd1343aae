"""Loaded by the `sdstudio download` subprocesses of the tests (PYTHONPATH): the process may
reach 127.0.0.1 only; anything else fails with ConnectionRefusedError naming the address."""

from __future__ import annotations

import socket
from typing import Any

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _check(sock: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
        raise ConnectionRefusedError(f"test guard: refused connection to {address!r}")


def connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    return _connect(self, address)


def connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _connect_ex(self, address)


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host not in (*_LOOPBACK, None):
        raise socket.gaierror(f"test guard: refused to look up {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = getaddrinfo
