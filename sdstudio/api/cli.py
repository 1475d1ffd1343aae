"""``sdstudio serve``: the AUTOMATIC1111-compatible API without the window.

The same request handling as the window's switch (``sdstudio.api.server`` and
``ApiService``) over a job queue of its own: a Qt core event loop (no window, no display)
owns one :class:`~sdstudio.worker.JobQueue`, whose one worker thread runs every job.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Any

from sdstudio.cli.common import EXIT_OK, PROG
from sdstudio.cli.request_args import add_engine_arguments, engine_settings_from_args
from sdstudio.core.settings import API_DEFAULT_HOST, API_DEFAULT_PORT


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="answer AUTOMATIC1111's web API (/sdapi/v1/...) for other programs",
        description="Serve AUTOMATIC1111's API (txt2img, img2img, progress, options, "
                    "models ...) so chat front-ends, editor plug-ins and scripts can use SD "
                    "Studio. Only this computer can connect unless --host says otherwise "
                    "(then --token is required). Ctrl+C stops.")
    p.add_argument("--host", default=API_DEFAULT_HOST,
                   help=f"address to listen on (default {API_DEFAULT_HOST}: this computer only)")
    p.add_argument("--port", type=int, default=API_DEFAULT_PORT,
                   help=f"port (default {API_DEFAULT_PORT}, AUTOMATIC1111's; 0 = any free one)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' (or HTTP Basic with TOKEN as "
                        "the password); default: the token in the settings")
    p.add_argument("--cors-origin", action="append", default=None, metavar="URL",
                   help="allow browser pages from this origin (repeatable; default: none)")
    add_engine_arguments(p)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QCoreApplication, QTimer

    from sdstudio.api.server import ApiServer
    from sdstudio.api.service import ApiService
    from sdstudio.app import _engine_factory, setup_logging
    from sdstudio.core.settings import load_settings
    from sdstudio.worker import JobQueue

    setup_logging()
    settings = load_settings()
    settings = settings.replace(engine=engine_settings_from_args(args, settings))
    token = args.token if args.token is not None else settings.api.token
    origins = tuple(args.cors_origin or settings.api.cors_origins)
    app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1] or [PROG])
    queue = JobQueue(engine_factory=_engine_factory(), settings=settings.engine)
    queue.set_output(str(settings.output_path), settings.filename_pattern)
    service = ApiService(queue, settings)
    server = ApiServer(service, args.host, args.port, token, origins)  # checks the token rule
    queue.start()
    queue.refresh_models()
    try:
        server.start()
        print(f"{PROG}: serving AUTOMATIC1111's API on {server.url}/sdapi/v1/ "
              "(Ctrl+C stops)", flush=True)

        def stop(*_: object) -> None:
            QTimer.singleShot(0, app.quit)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, stop)
        keepalive = QTimer()
        keepalive.timeout.connect(lambda: None)  # lets Python see Ctrl+C
        keepalive.start(200)
        app.exec()
        keepalive.stop()
    finally:
        service.abort_all()
        server.stop()
        queue.shutdown(5000)
    print(f"{PROG}: stopped", flush=True)
    return EXIT_OK
