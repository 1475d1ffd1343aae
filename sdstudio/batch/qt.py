"""BatchController: runs a BatchRunner on the window's worker thread, with the worker's engine.

The batch panel (sdstudio/ui/batch_panel.py) talks only to this controller; it never touches
the engine. The controller hands the batch to the :class:`sdstudio.worker.JobQueue` as one
exclusive task (``JobQueue.run_exclusive``): it runs in the one worker thread, with the one
engine and its already loaded model (never a second copy in memory), in order with the single
generations and never alongside one. The queue shows it as one job with its progress;
cancelling it there cancels the batch. Pause takes effect after the current image and holds
the worker (queued generations run after the batch is resumed or cancelled).

Every ``BatchEvent`` is relayed as the ``batchEvent`` signal, which Qt queues to the GUI
thread (not ``event``: that name would hide ``QObject.event``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from sdstudio.batch.events import (
    BatchEvent,
    BatchPaused,
    BatchPlanned,
    BatchSummary,
    UnitDone,
    UnitEngineEvent,
    UnitFailed,
)
from sdstudio.batch.plan import BatchOptions
from sdstudio.batch.runner import BatchControl, BatchRunner, ListChangedError
from sdstudio.core.errors import CancelledError, SDStudioError, describe_error
from sdstudio.core.events import format_duration
from sdstudio.core.prompts import PromptList
from sdstudio.core.request import GenerationRequest

if TYPE_CHECKING:
    from sdstudio.worker import JobQueue, TaskContext

log = logging.getLogger(__name__)


class BatchController(QObject):
    batchEvent = Signal(object)  # BatchEvent (from the worker thread, queued to the GUI thread)
    failed = Signal(object)  # SDStudioError raised before or instead of running (list changed...)
    finished = Signal()  # the batch's job has ended (after the summary or a failure)

    def __init__(self, queue: JobQueue | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._owns_queue = queue is None
        if queue is None:  # no window: a queue (and engine) of its own, started on demand
            from sdstudio.worker import JobQueue

            queue = JobQueue(parent=self)
        self.queue = queue
        self.job_id: int | None = None
        self.control = BatchControl()
        queue.jobFinished.connect(self._on_job_finished)

    @property
    def running(self) -> bool:
        """A batch was started and has not ended (it may still wait in the queue)."""
        return self.job_id is not None

    @property
    def paused(self) -> bool:
        return self.control.paused

    def start(self, prompts: PromptList, options: BatchOptions,
              defaults: GenerationRequest | None = None) -> int:
        """Queue the batch on the worker; returns its job id."""
        if self.running:
            raise RuntimeError("a batch is already running")
        control = self.control = BatchControl()
        if not self.queue.running:
            self.queue.start()
        from pathlib import PurePath

        name = PurePath(prompts.source_name).name if prompts.source_name else "prompt list"
        self.job_id = self.queue.run_exclusive(
            _BatchTask(self, prompts, options, defaults, control),
            label=f"Batch: {name}", request=defaults, source="batch",
            detail=f"batch of {len(prompts.items)} prompt(s)", on_cancel=control.cancel,
        )
        return self.job_id

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        if self.job_id is not None:
            self.queue.cancel(self.job_id)  # also cancels the control (on_cancel)
        self.control.cancel()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Cancel the batch (window closing, tests). The worker thread belongs to the queue:
        it is stopped here only when the controller made its own queue. True when nothing of
        the batch is left running."""
        self.control.cancel()
        if self.job_id is not None:
            self.queue.cancel(self.job_id)
        if self._owns_queue:
            return self.queue.shutdown(int(timeout_s * 1000))
        return True

    def _on_job_finished(self, job_id: int, state: str) -> None:
        if job_id == self.job_id:
            self.job_id = None
            self.finished.emit()


class _BatchTask:
    """The batch as a worker task: runs in the worker thread with the worker's engine."""

    def __init__(self, controller: BatchController, prompts: PromptList, options: BatchOptions,
                 defaults: GenerationRequest | None, control: BatchControl) -> None:
        self.controller = controller
        self.prompts = prompts
        self.options = options
        self.defaults = defaults
        self.control = control
        self.assigned = 0
        self.finished = 0
        self.kept = 0  # images of earlier runs of the batch
        self.started = 0.0

    def __call__(self, ctx: TaskContext) -> None:
        if ctx.cancel.cancelled:
            self.control.cancel()

        def on_event(event: BatchEvent) -> None:
            self._report(ctx, event)
            self.controller.batchEvent.emit(event)

        try:
            runner = BatchRunner(ctx.engine, self.prompts, self.options, on_event=on_event,
                                 control=self.control, defaults=self.defaults, owner="window")
            summary = runner.run()
        except ListChangedError as exc:
            # Not a failure: the panel asks the person to resume or restart.
            self.controller.failed.emit(exc)
            raise CancelledError("the prompt list changed") from None
        except SDStudioError as exc:
            self.controller.failed.emit(exc)
            raise
        except Exception as exc:  # shown to the person; the worker keeps working
            log.exception("batch failed")
            error = SDStudioError(f"the batch stopped: {describe_error(exc)}")
            self.controller.failed.emit(error)
            raise error from exc
        if summary.cancelled:
            raise CancelledError("the batch was cancelled")

    def _report(self, ctx: TaskContext, event: BatchEvent) -> None:
        if isinstance(event, UnitEngineEvent):
            ctx.engine_event(event.event)
            return
        if isinstance(event, BatchPlanned):
            # a resumed batch counts the images of earlier runs: "3/5", not "1/3"
            self.assigned = event.already_done + event.assigned
            self.kept = self.finished = event.already_done
            self.started = time.perf_counter()
        elif isinstance(event, (UnitDone, UnitFailed)):
            self.finished += 1
            if isinstance(event, UnitDone):
                ctx.image_saved(str(event.path))
        elif not isinstance(event, (BatchPaused, BatchSummary)):
            return
        ctx.report(self.finished, self.assigned, self._line(event))

    def _line(self, event: BatchEvent) -> str:
        if isinstance(event, BatchSummary):
            return f"{event.failed} failed" if event.failed else ""
        text = f"{self.finished}/{self.assigned} images"
        if isinstance(event, BatchPaused) and event.paused:
            return f"paused · {text}"
        if self.finished > self.kept:
            per = (time.perf_counter() - self.started) / (self.finished - self.kept)
            text += f" · {per:.1f} s/image"
            left = max(0, self.assigned - self.finished)
            if left:
                text += f" · {format_duration(per * left)} left"
        return text
