"""A small background runner for the window's light chores (token counting, thumbnails,
reading metadata, listing folders), so the GUI thread never waits on them.

One Python thread per runner, a FIFO of callables; each result (or exception) comes back to
the GUI thread through a queued Qt signal and is handed to the callback there. ``stop()``
ends the thread (the window calls it on close; tests call it at teardown).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

_RUNNERS: list[BackgroundRunner] = []


def running_runners() -> list[BackgroundRunner]:
    return [r for r in _RUNNERS if r.alive]


class BackgroundRunner(QObject):
    _done = Signal(object)  # (callback, result, error, generation)

    def __init__(self, name: str = "sdstudio-background", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._name = name
        self._queue: queue.Queue[tuple[Callable[[], Any], Callable[[Any], None] | None,
                                       Callable[[BaseException], None] | None, int] | None]
        self._queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by cancel_pending(): stale results are dropped
        self._done.connect(self._deliver)
        _RUNNERS.append(self)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, fn: Callable[[], Any], callback: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, callback, on_error, self._generation))

    def cancel_pending(self) -> None:
        """Drop queued work and the results of work already running."""
        self._generation += 1
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def stop(self, timeout: float = 2.0) -> None:
        self.cancel_pending()
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
        if self in _RUNNERS and (thread is None or not thread.is_alive()):
            _RUNNERS.remove(self)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, callback, on_error, generation = item
            if generation != self._generation:
                continue
            try:
                result, error = fn(), None
            except BaseException as exc:  # delivered to on_error or logged
                result, error = None, exc
            if generation != self._generation:
                continue
            try:
                self._done.emit((callback, on_error, result, error, generation))
            except RuntimeError:  # the QObject was deleted while we worked
                return

    def _deliver(self, payload: tuple[Any, ...]) -> None:
        callback, on_error, result, error, generation = payload
        if generation != self._generation:
            return
        if error is not None:
            if on_error is not None:
                on_error(error)
            else:
                log.warning("background task failed: %s", error)
            return
        if callback is not None:
            callback(result)
