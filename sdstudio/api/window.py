"""The window's "Allow other programs to use SD Studio" switch: serves the API from the
running app, over the window's own job queue (one worker, one loaded model), so API jobs
appear in the window's queue (marked "API") and their saved images in the gallery.

Wired by ``sdstudio.app`` (the composition root): the window knows nothing of it. It follows
``settings.api`` on every settings change and stops the server when the window closes.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QEvent, QObject

from sdstudio.api.server import ApiServer
from sdstudio.api.service import ApiService
from sdstudio.core.errors import SDStudioError
from sdstudio.core.settings import ApiSettings, Settings

log = logging.getLogger(__name__)


class ApiController(QObject):
    def __init__(self, window: Any, queue: Any) -> None:
        super().__init__(window)
        self.window = window
        self.service = ApiService(queue, window.settings, self)
        self.server: ApiServer | None = None
        self._serving: ApiSettings | None = None
        window.settingsChanged.connect(self.apply)
        window.installEventFilter(self)

    def apply(self, settings: Settings) -> None:
        """Start, restart or stop the server as ``settings.api`` says."""
        self.service.update_settings(settings)
        wanted = settings.api if settings.api.enabled else None
        if wanted == self._serving and (wanted is None or self.running):
            return
        self.stop()
        if wanted is None:
            return
        try:
            server = ApiServer(self.service, wanted.host, wanted.port, wanted.token,
                               wanted.cors_origins)
            server.start()
        except SDStudioError as exc:
            self.window.show_error(f"Other programs cannot use SD Studio: {exc}")
            return
        self.server, self._serving = server, wanted
        self.service.call(self.service.queue.refresh_models)
        self.window.statusBar().showMessage(
            f"Other programs can use SD Studio at {server.url} (AUTOMATIC1111's API)", 10000)

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    def stop(self) -> None:
        if self.server is not None:
            self.service.abort_all()  # waiting calls answer now, not after a timeout
            self.server.stop()
            log.info("API server stopped")
        self.server, self._serving = None, None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.window and event.type() == QEvent.Type.Close:
            self.stop()
        return False
