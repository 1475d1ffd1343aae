"""BatchController: runs a BatchRunner in a background thread for the window.

The batch panel (sdstudio/ui/batch_panel.py) talks only to this controller; it never touches
the engine. The controller creates its engine lazily *inside* its thread (through
``engine_factory``; the default imports ``sdstudio.engine`` there), keeps it for the next batch
so the model stays loaded, and relays every ``BatchEvent`` as a Qt signal, which Qt queues to
the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from sdstudio.batch.events import BatchEvent
from sdstudio.batch.plan import BatchOptions
from sdstudio.batch.runner import BatchControl, BatchRunner, GeneratingEngine
from sdstudio.core.errors import SDStudioError
from sdstudio.core.prompts import PromptList
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.ui import qtcompat

log = logging.getLogger(__name__)
qtcompat.apply()  # before any signal is emitted (PySide6 6.12 emit refcount bug)

EngineFactory = Callable[[], GeneratingEngine]


def default_engine_factory(settings: EngineSettings | None = None) -> EngineFactory:
    def make() -> GeneratingEngine:
        import os

        if os.environ.get("SDSTUDIO_FAKE_ENGINE") == "1":
            from sdstudio.worker.fake import FakeEngine

            return FakeEngine(settings)  # type: ignore[return-value]
        from sdstudio.engine import Engine

        return Engine(settings)  # type: ignore[no-any-return]

    return make


class BatchController(QObject):
    event = Signal(object)  # BatchEvent (from the batch thread, queued to the GUI thread)
    failed = Signal(object)  # SDStudioError raised before or instead of running (list changed...)
    finished = Signal()  # the thread is done (after the summary or a failure)

    def __init__(self, engine_factory: EngineFactory | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._factory = engine_factory or default_engine_factory()
        self._engine: GeneratingEngine | None = None
        self._thread: threading.Thread | None = None
        self.control = BatchControl()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return self.control.paused

    def start(self, prompts: PromptList, options: BatchOptions,
              defaults: GenerationRequest | None = None) -> None:
        if self.running:
            raise RuntimeError("a batch is already running")
        self.control = BatchControl()
        self._thread = threading.Thread(
            target=self._run, args=(prompts, options, defaults, self.control),
            name="sdstudio-batch",
        )
        self._thread.start()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Cancel and wait for the thread (window closing, tests). True when it ended."""
        self.control.cancel()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _run(self, prompts: PromptList, options: BatchOptions,
             defaults: GenerationRequest | None, control: BatchControl) -> None:
        try:
            if self._engine is None:
                self._engine = self._factory()
            runner = BatchRunner(self._engine, prompts, options, on_event=self._emit,
                                 control=control, defaults=defaults)
            runner.run()
        except SDStudioError as exc:
            self.failed.emit(exc)
        except Exception as exc:  # shown to the person; the window keeps working
            log.exception("batch failed")
            self.failed.emit(SDStudioError(f"the batch stopped: {type(exc).__name__}: {exc}"))
        finally:
            self.finished.emit()

    def _emit(self, event: BatchEvent) -> None:
        self.event.emit(event)
