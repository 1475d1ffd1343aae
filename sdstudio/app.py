"""Composition root of the desktop app: QApplication, theme, logging, exception hooks, and the
wiring of the main window to the worker.

Start-up order matters: the window is shown first (torch is not imported yet); then, from the
event loop, the worker thread starts and creates the engine (importing torch there) and loads
the last used model while the window already responds.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from sdstudio.core.errors import describe_error

_T0 = time.perf_counter()

log = logging.getLogger("sdstudio")

#: Set by run(): the main window, for the exception hooks and for tests.
_WINDOW: Any = None


def setup_logging() -> str:
    """Log INFO and above to ``log_dir()/sdstudio.log`` (rotating). Returns the file path."""
    from sdstudio.core.paths import log_dir

    folder = log_dir()
    path = folder / "sdstudio.log"
    root = logging.getLogger("sdstudio")
    if any(getattr(h, "_sdstudio", False) for h in root.handlers):
        return str(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    handler._sdstudio = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return str(path)


class _ErrorRelay:
    """Shows uncaught exceptions of any thread in the window's error bar (GUI thread only)."""

    def __init__(self) -> None:
        from PySide6.QtCore import QObject, Signal

        class Relay(QObject):
            error = Signal(str, str)

        self.relay = Relay()
        self.relay.error.connect(self._show)

    def report(self, exc_type: type[BaseException], exc: BaseException | None,
               tb: TracebackType | None, where: str) -> None:
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("uncaught exception in %s:\n%s", where, details)
        message = f"Unexpected error in {where}: " + (
            describe_error(exc) if exc is not None else exc_type.__name__)
        with contextlib.suppress(RuntimeError):  # queued when called from another thread
            self.relay.error.emit(message, details)

    @staticmethod
    def _show(message: str, details: str) -> None:
        window = _WINDOW
        if window is not None:
            try:
                window.show_error(message + " (the app keeps running; see the log)", details)
                return
            except RuntimeError:
                pass
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(QMessageBox.Icon.Critical, "SD Studio", message)
        box.setDetailedText(details)
        box.setAttribute(box.WidgetAttribute.WA_DeleteOnClose)  # type: ignore[attr-defined]
        box.show()


def install_exception_hooks() -> _ErrorRelay:
    relay = _ErrorRelay()

    def excepthook(exc_type: type[BaseException], exc: BaseException,
                   tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        relay.report(exc_type, exc, tb, "the window")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        relay.report(args.exc_type, args.exc_value, args.exc_traceback, f"thread {name}")

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    return relay


def _engine_factory() -> Any:
    if os.environ.get("SDSTUDIO_FAKE_ENGINE") == "1":
        from sdstudio.testing.fake_engine import fake_engine_factory

        return fake_engine_factory()
    return None  # the worker's default: sdstudio.engine.Engine, created in the worker thread


# what must not be imported before the window is shown (the worker imports them after)
_HEAVY_MODULES = ("torch", "diffusers", "transformers", "accelerate", "safetensors")


def _add_optional_panels(window: Any, queue: Any) -> None:
    """Add the batch panel (sdstudio.ui.batch_panel) as a tab. A panel that fails to build is
    logged and left out: the rest of the window keeps working."""
    from sdstudio.ui.batch_panel import PANEL_TITLE, create_panel

    try:
        panel = create_panel(window, queue, window.settings)
        window.add_panel(panel, PANEL_TITLE, "batch")
    except Exception:
        log.exception("the batch panel could not be added")


def _serve_api(window: Any, queue: Any) -> Any:
    """The "Allow other programs to use SD Studio" switch (sdstudio.api.window): serves
    AUTOMATIC1111's API over the window's queue while the settings say so. Returns the
    controller (None if it could not be set up: logged, the window keeps working)."""
    try:
        from sdstudio.api.window import ApiController

        controller = ApiController(window, queue)
        controller.apply(window.settings)
        return controller
    except Exception:
        log.exception("the API switch could not be set up")
        return None


def _handle_signals(window: Any) -> Any:
    """Ctrl+C / SIGTERM close the window cleanly (the event loop lets Python run every 200 ms)."""
    from PySide6.QtCore import QTimer

    def close(*_: object) -> None:
        from PySide6.QtCore import QTimer as _Timer

        _Timer.singleShot(0, window.close)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # not the main thread / unsupported
            signal.signal(sig, close)
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(200)
    return timer


def run(argv: Sequence[str] | None = None,
        on_started: Callable[[Any], None] | None = None, fast_exit: bool = True) -> int:
    """Open the window and run until it is closed. Returns the exit status (0).

    ``on_started(window)`` is called once the window is shown and the worker is starting
    (tests and tools use it to drive the real app). With ``fast_exit`` (the default) the
    process ends right after the window has closed and the worker has stopped, skipping the
    interpreter's slow teardown of torch (seconds); settings and images are already on disk."""
    global _WINDOW
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication

    log_path = setup_logging()
    args = list(argv) if argv is not None else sys.argv[:1]
    app = QApplication.instance() or QApplication(args or ["sdstudio"])
    assert isinstance(app, QApplication)
    app.setApplicationName("SD Studio")
    app.setApplicationDisplayName("SD Studio")
    app.setOrganizationName("SD Studio")
    app.setDesktopFileName("sdstudio")

    from sdstudio.core.settings import load_settings
    from sdstudio.ui.main_window import MainWindow
    from sdstudio.ui.theme import app_icon, apply_theme
    from sdstudio.worker import JobQueue

    apply_theme(app)
    app.setWindowIcon(app_icon())
    hints = app.styleHints()
    if hasattr(hints, "colorSchemeChanged"):
        hints.colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    relay = install_exception_hooks()

    settings = load_settings()
    queue = JobQueue(engine_factory=_engine_factory(), settings=settings.engine)
    window = MainWindow(settings, queue)
    _WINDOW = window
    window.show()
    shown_s = time.perf_counter() - _T0
    log.info("window shown %.3f s after start (torch imported: %s); log: %s",
             shown_s, "torch" in sys.modules, log_path)
    if os.environ.get("SDSTUDIO_STARTUP_PROBE"):
        # bench/startup.py: report when the first frame is out and the heavy modules loaded
        # by then; add the panels a start adds next and report again; then quit.
        def heavy() -> str:
            return ",".join(m for m in _HEAVY_MODULES if m in sys.modules) or "-"

        def probe() -> None:
            print(f"SDSTUDIO_SHOWN {time.time():.6f} torch={'torch' in sys.modules} "
                  f"heavy={heavy()} cpu={time.process_time():.3f}", flush=True)
            _add_optional_panels(window, queue)
            _serve_api(window, queue)
            print(f"SDSTUDIO_READY {time.time():.6f} heavy={heavy()}", flush=True)
            window.close()

        QTimer.singleShot(0, probe)
    else:
        QTimer.singleShot(0, window.start)
        QTimer.singleShot(0, lambda: _add_optional_panels(window, queue))
        QTimer.singleShot(0, lambda: _serve_api(window, queue))
        if on_started is not None:
            QTimer.singleShot(0, lambda: on_started(window))
    keepalive = _handle_signals(window)
    app.setQuitOnLastWindowClosed(True)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)

    status = app.exec()
    keepalive.stop()
    from sdstudio.ui.result_actions import release_clipboard

    release_clipboard()  # a copied image stays copied, and the exit does not crash
    _WINDOW = None
    if not window._closing:  # quit without closing the window (e.g. app.quit())
        window.close()
    if queue.running or (fast_exit and "torch" in sys.modules):
        # Either the engine is stuck in something it cannot cancel (a huge model load, say)
        # and a running QThread must not be destroyed, or torch is loaded and tearing it down
        # would take seconds: exit now. Everything worth keeping is already on disk.
        if queue.running:
            log.warning("the worker did not stop in time; exiting without waiting")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))
    del relay
    return int(status)
