"""JobQueue: the window's side of the worker — a Qt list model of jobs and the one QThread.

The queue lives in the GUI thread. It owns an :class:`EngineWorker` moved to a long-lived
QThread, hands it one job at a time (so queued jobs stay removable until they start), and
re-emits everything the worker reports as Qt signals carrying the job id. Views observe it
(``QListView.setModel(queue)``); nothing here blocks the GUI thread except ``shutdown``, which
waits a bounded time for the thread to end.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QThread,
    QTimer,
    Signal,
)

from sdstudio.core.cancel import CancelToken
from sdstudio.core.events import LoadProgress, ModelReady, Progress
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.worker.engine_worker import (
    EngineFactory,
    EngineWorker,
    TaskContext,
    WorkerTask,
    default_engine_factory,
)
from sdstudio.worker.jobs import Failure, Job, JobImage, JobState
from sdstudio.worker.previews import PreviewSlot, ShownPreview

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001
MIN_PREVIEW_INTERVAL_S = 0.1  # live previews shown at most 10 times a second
# a running job's row (its step) repainted at most 4 times a second: the GUI thread's work
# per step delays the worker (one interpreter lock); other changes show at once
ROW_PROGRESS_INTERVAL_S = 0.25
_THREADS: list[QThread] = []  # every worker thread this module started (tests check them)


def running_threads() -> list[QThread]:
    """Worker threads that are still running (a test fixture asserts this is empty)."""
    alive: list[QThread] = []
    for thread in list(_THREADS):
        try:
            if thread.isRunning():
                alive.append(thread)
            else:
                _THREADS.remove(thread)
        except RuntimeError:  # the C++ object is gone
            _THREADS.remove(thread)
    return alive


StateRole = Qt.ItemDataRole.UserRole + 1
JobIdRole = Qt.ItemDataRole.UserRole + 2
SummaryRole = Qt.ItemDataRole.UserRole + 3
JobRole = Qt.ItemDataRole.UserRole + 4
ProgressRole = Qt.ItemDataRole.UserRole + 5  # float 0..1 while running, else None

_Index = QModelIndex | QPersistentModelIndex


class JobQueue(QAbstractListModel):
    """Queue of jobs run one at a time by the engine worker thread: generations
    (:meth:`submit_request`) and tasks that use the worker's engine directly (:meth:`run_exclusive`,
    a batch for instance), in the order they were queued, never two at once."""

    # jobs
    jobAdded = Signal(int)
    jobStarted = Signal(int)
    jobProgress = Signal(int, object)  # job id, core.events.Progress
    jobPreview = Signal(int, object)  # job id, QImage
    imageReady = Signal(int, object)  # job id, JobImage
    jobFinished = Signal(int, str)  # job id, JobState value (done / failed / cancelled)
    jobFailed = Signal(int, object)  # job id, Failure
    taskProgress = Signal(int, int, int, str)  # job id, items done, items in all, text
    busyChanged = Signal(int)  # 1 while a job is running or queued (never emit bool: PySide6 6.12
    # loses a reference to True/False on every bool emitted through a Python Signal)
    # engine and model
    engineStarted = Signal()
    engineFailed = Signal(object)  # Failure
    loadStarted = Signal(str)
    loadProgress = Signal(object)  # core.events.LoadProgress
    modelReady = Signal(object)  # core.events.ModelReady
    modelFailed = Signal(object)  # Failure
    modelsListed = Signal(object)  # list[dict] with name, path, ...
    notice = Signal(str)

    # to the worker (queued across threads)
    _initRequested = Signal()
    _configureRequested = Signal(object)
    _loadRequested = Signal(str, object)
    _runRequested = Signal(int, object, object, object)
    _taskRequested = Signal(int, object, object)
    _listRequested = Signal(object)
    _stopRequested = Signal()

    def __init__(self, engine_factory: EngineFactory | None = None,
                 settings: EngineSettings | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._factory = engine_factory or default_engine_factory
        self._settings = settings or EngineSettings()
        self._jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._tokens: dict[int, CancelToken] = {}
        self._tasks: dict[int, tuple[WorkerTask, Callable[[], None] | None]] = {}
        self._running: int | None = None
        self._load_token: CancelToken | None = None
        self._thread: QThread | None = None
        self._worker: EngineWorker | None = None
        self._save: tuple[str, str] | None = None
        self._stopping = False
        self.loaded: ModelReady | None = None
        self.loading = False
        self.engine_ok: bool | None = None  # None until the engine has started or failed
        # live previews: the worker's latest-only slot, taken at most every
        # MIN_PREVIEW_INTERVAL_S; last_preview is the one jobPreview carries now
        self.previews = PreviewSlot(MIN_PREVIEW_INTERVAL_S)
        self.last_preview: ShownPreview | None = None
        self._preview_shown_at = 0.0
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.timeout.connect(self._deliver_preview)
        self._row_shown_at = 0.0
        self._rows_waiting: set[int] = set()
        self._row_timer = QTimer(self)
        self._row_timer.setSingleShot(True)
        self._row_timer.timeout.connect(self._flush_rows)

    # ===================================================================== lifecycle
    def start(self) -> None:
        """Start the worker thread; the engine (and torch) is created inside it."""
        if self._thread is not None:
            return
        # The GUI thread needs the GIL for every Python slot; with the default 5 ms switch
        # interval a busy worker makes each event-loop iteration wait up to 5 ms per call.
        if sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        thread = QThread()
        thread.setObjectName("sdstudio-engine")
        worker = EngineWorker(self._factory, self._settings, self.previews)
        worker.moveToThread(thread)
        # finished -> quit must be direct: it runs in the worker thread as stop() ends.
        worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(worker.deleteLater)

        self._initRequested.connect(worker.init_engine)
        self._configureRequested.connect(worker.configure)
        self._loadRequested.connect(worker.load_model)
        self._runRequested.connect(worker.run_job)
        self._taskRequested.connect(worker.run_task)
        self._listRequested.connect(worker.list_models)
        self._stopRequested.connect(worker.stop)

        worker.engineStarted.connect(self._on_engine_started)
        worker.engineFailed.connect(self._on_engine_failed)
        worker.loadStarted.connect(self.loadStarted)
        worker.loadProgress.connect(self._on_load_progress)
        worker.modelReady.connect(self._on_model_ready)
        worker.loadFailed.connect(self._on_load_failed)
        worker.jobStarted.connect(self._on_job_started)
        worker.jobProgress.connect(self._on_job_progress)
        worker.previewWaiting.connect(self._on_preview_waiting)
        worker.imageReady.connect(self._on_image_ready)
        worker.jobNotice.connect(self._on_notice)
        worker.jobDone.connect(self._on_job_done)
        worker.taskProgress.connect(self._on_task_progress)
        worker.taskImage.connect(self._on_task_image)
        worker.modelsListed.connect(self.modelsListed)

        self._thread, self._worker = thread, worker
        _THREADS.append(thread)
        thread.start()
        self._initRequested.emit()
        self._dispatch()

    def shutdown(self, timeout_ms: int = 1500) -> bool:
        """Cancel everything, stop the worker and wait for its thread. True when it ended in
        time; False leaves the thread referenced (never destroyed while running)."""
        self._stopping = True
        self._row_timer.stop()  # no repaint is due after the end
        self._rows_waiting.clear()
        for job in self._jobs:
            if job.state is JobState.QUEUED:
                self._set_state(job, JobState.CANCELLED)
        for token in self._tokens.values():
            token.cancel()
        for job_id in list(self._tasks):
            self._cancel_task(job_id)
        if self._load_token is not None:
            self._load_token.cancel()
        thread = self._thread
        if thread is None:
            return True
        if thread.isRunning():
            self._stopRequested.emit()
            ended = thread.wait(max(1, int(timeout_ms)))
        else:
            ended = True
        if not ended:
            log.warning("the worker thread did not stop within %d ms", timeout_ms)
            return False
        self._thread = None
        self._worker = None
        running_threads()
        return True

    @property
    def running(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.isRunning()

    # ======================================================================= engine
    def configure(self, settings: EngineSettings) -> None:
        self._settings = settings
        if self._thread is not None:
            self._configureRequested.emit(settings)

    def set_output(self, out_dir: str, pattern: str) -> None:
        """Where (and under which file-name pattern) new jobs save their images."""
        self._save = (str(out_dir), pattern)

    def load_model(self, model: str = "") -> None:
        """Load a model in the worker (after the running job, if any). Cancels a pending load."""
        if self._load_token is not None:
            self._load_token.cancel()
        self._load_token = CancelToken()
        self.loading = True
        if self._thread is None:
            self.start()
        self._loadRequested.emit(model, self._load_token)

    def cancel_load(self) -> None:
        if self._load_token is not None:
            self._load_token.cancel()

    def refresh_models(self) -> None:
        """Ask the worker for the models in the configured folders (``modelsListed``)."""
        if self._thread is not None:
            self._listRequested.emit(self._settings)

    # ========================================================================= jobs
    def submit_request(self, request: GenerationRequest, *, label: str = "",
                       source: str = "window", save: bool = True) -> int:
        """Queue a request; returns its job id. Runs when every earlier job has finished.
        (Not ``submit``: that is QAbstractItemModel's virtual slot, which Qt's item views and
        QDataWidgetMapper call with no arguments.)"""
        job = Job(id=next(self._ids), request=request, label=label, source=source, save=save)
        row = len(self._jobs)
        self.beginInsertRows(QModelIndex(), row, row)
        self._jobs.append(job)
        self.endInsertRows()
        self.jobAdded.emit(job.id)
        self.busyChanged.emit(1)
        self._dispatch()
        return job.id

    def run_exclusive(self, task: WorkerTask, *, label: str,
                      request: GenerationRequest | None = None, source: str = "task",
                      detail: str = "", on_cancel: Callable[[], None] | None = None) -> int:
        """Queue ``task(context)`` to run in the worker thread with the worker's engine (the
        model stays loaded once), in order with the generations, never alongside one.

        ``context`` is a :class:`sdstudio.worker.TaskContext` (``engine``, ``cancel``,
        ``report``, ``image_saved``, ``engine_event``). The queue shows the task as one job
        with its progress; cancelling it sets ``context.cancel`` and calls ``on_cancel`` (in
        the GUI thread; it must be thread-safe), also when the window closes. ``request``
        describes the task's defaults for the queue's tooltip. Returns the job id."""
        job = Job(id=next(self._ids), request=request or GenerationRequest(prompt=""),
                  label=label, source=source, save=False, kind="task", detail=detail)
        self._tasks[job.id] = (task, on_cancel)
        row = len(self._jobs)
        self.beginInsertRows(QModelIndex(), row, row)
        self._jobs.append(job)
        self.endInsertRows()
        self.jobAdded.emit(job.id)
        self.busyChanged.emit(1)
        self._dispatch()
        return job.id

    def submit_upscale(self, source: str, *, upscaler: str, scale: float,
                       out_dir: str) -> int:
        """Queue an upscale of the image file ``source`` (A1111's Extras) into ``out_dir``:
        a task on the worker thread with the worker's engine (``Engine.upscale_file``), in
        order with the other jobs. Its progress is the task's own (tiles done of all); the
        saved file is the job's one image (``Job.images``) when ``jobFinished`` says done;
        cancelling stops it between tiles. Returns the job id."""
        from sdstudio.core.upscalers import normalise

        def task(context: TaskContext) -> None:
            def progress(done: int, total: int) -> None:
                context.report(done, total, f"tile {done}/{total}")

            path = context.engine.upscale_file(source, upscaler=upscaler, scale=scale,
                                               out_dir=out_dir, on_progress=progress,
                                               cancel=context.cancel)
            context.image_saved(str(path))

        name = Path(source).name
        label = f"Upscale {name} ×{scale:g} ({normalise(upscaler)})"
        return self.run_exclusive(task, label=label, source="upscale",
                                  detail=f"{name} ×{scale:g}")

    def submit_verify(self, path: str, kind: str) -> int:
        """Queue the safe loader's check of a model file (``engine.verify.verify_model_file``:
        a downloaded file is used only once this says done) on the worker thread, in order
        with the other jobs. A refused file fails the job with the loader's one-line reason
        (``Job.failure``). Returns the job id."""
        name = Path(path).name

        def task(context: TaskContext) -> None:
            from sdstudio.engine.verify import verify_model_file

            context.report(0, 1, f"checking {name}")
            context.cancel.raise_if_cancelled()
            verify_model_file(Path(path), kind)
            context.report(1, 1, f"{name} checked")

        return self.run_exclusive(task, label=f"Check {name}", source="verify", detail=name)

    def cancel(self, job_id: int) -> bool:
        """Cancel a job: a queued one never runs (and reports ``jobFinished`` as cancelled);
        the running one stops within one step."""
        job = self.job(job_id)
        if job is None or job.state.finished:
            return False
        if job.state is JobState.QUEUED:
            self._set_state(job, JobState.CANCELLED)
            self._cancel_task(job_id)
            self.jobFinished.emit(job_id, JobState.CANCELLED.value)
            self._emit_busy()
            return True
        token = self._tokens.get(job_id)
        if token is not None:
            token.cancel()
        self._cancel_task(job_id)
        return True

    def cancel_running(self) -> bool:
        return self._running is not None and self.cancel(self._running)

    def cancel_all(self) -> None:
        for job in list(self._jobs):
            if not job.state.finished:
                self.cancel(job.id)

    def remove(self, job_id: int) -> bool:
        """Remove a queued or finished job from the list (a running one is cancelled instead)."""
        job = self.job(job_id)
        if job is None:
            return False
        if job.state is JobState.RUNNING:
            return self.cancel(job_id)
        if job.state is JobState.QUEUED:
            self.cancel(job_id)
        row = self._jobs.index(job)
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._jobs[row]
        self.endRemoveRows()
        self._tokens.pop(job_id, None)
        self._emit_busy()
        return True

    def clear_finished(self) -> None:
        for job in [j for j in self._jobs if j.state.finished]:
            self.remove(job.id)

    def job(self, job_id: int) -> Job | None:
        for job in self._jobs:
            if job.id == job_id:
                return job
        return None

    def jobs(self) -> list[Job]:
        return list(self._jobs)

    @property
    def running_job(self) -> Job | None:
        return self.job(self._running) if self._running is not None else None

    @property
    def pending_count(self) -> int:
        return sum(1 for j in self._jobs if j.state is JobState.QUEUED)

    @property
    def busy(self) -> bool:
        return self._running is not None or self.pending_count > 0

    # ======================================================================== model
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._jobs)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._jobs):
            return None
        job = self._jobs[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{job.title}\n{job.summary}"
        if role == Qt.ItemDataRole.ToolTipRole:
            r = job.request
            lines = [f"<b>{_esc(job.title)}</b>", _esc(job.summary)]
            if not job.is_task:
                lines.append(f"{r.mode.value} · {r.width}×{r.height} · {r.steps} steps · "
                             f"{_esc(r.sampler)} · CFG {r.cfg_scale:g} · seed {r.seed}")
            if job.failure and job.failure.details:
                lines.append(_esc(job.failure.details.splitlines()[-1]))
            return "<br>".join(lines)
        if role == StateRole:
            return job.state.value
        if role == JobIdRole:
            return job.id
        if role == SummaryRole:
            return job.summary
        if role == JobRole:
            return job
        if role == ProgressRole:
            return job.fraction
        return None

    # ================================================================ worker slots
    def _dispatch(self) -> None:
        if self._running is not None or self._thread is None or self._stopping:
            return
        for job in self._jobs:
            if job.state is JobState.QUEUED:
                break
        else:
            return
        token = CancelToken()
        self._tokens[job.id] = token
        self._running = job.id
        job.started = time.time()
        self._set_state(job, JobState.RUNNING)
        if job.is_task:
            task, _on_cancel = self._tasks[job.id]
            self._taskRequested.emit(job.id, task, token)
            return
        save = self._save if job.save else None
        if job.save and save is None:
            from sdstudio.core.paths import default_output_dir
            from sdstudio.core.settings import DEFAULT_FILENAME_PATTERN

            save = (str(default_output_dir()), DEFAULT_FILENAME_PATTERN)
        self._runRequested.emit(job.id, job.request, token, save)

    def _on_engine_started(self) -> None:
        self.engine_ok = True
        self.engineStarted.emit()

    def _on_engine_failed(self, failure: Failure) -> None:
        self.engine_ok = False
        self.loading = False
        self.engineFailed.emit(failure)

    def _on_load_progress(self, event: LoadProgress) -> None:
        self.loading = True
        self.loadProgress.emit(event)

    def _on_model_ready(self, event: ModelReady) -> None:
        self.loaded = event
        self.loading = False
        self.modelReady.emit(event)

    def _on_load_failed(self, failure: Failure) -> None:
        self.loading = False
        self.modelFailed.emit(failure)

    def _on_job_started(self, job_id: int) -> None:
        self.jobStarted.emit(job_id)

    def _on_job_progress(self, job_id: int, event: Progress) -> None:
        job = self.job(job_id)
        if job is not None:
            job.step, job.total = event.step, event.total
            job.run, job.runs, job.s_per_it = event.run, event.runs, event.s_per_it
            self._progress_changed(job)
        self.jobProgress.emit(job_id, event)

    def _progress_changed(self, job: Job) -> None:
        """A job's step changed: its row repainted now, or with the next flush when a row
        was repainted for progress less than ROW_PROGRESS_INTERVAL_S ago."""
        wait = self._row_shown_at + ROW_PROGRESS_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._row_shown_at = time.monotonic()
            self._changed(job)
            return
        self._rows_waiting.add(job.id)
        if not self._row_timer.isActive():
            self._row_timer.start(max(1, round(wait * 1000)))

    def _flush_rows(self) -> None:
        waiting, self._rows_waiting = self._rows_waiting, set()
        if self._stopping:  # shut down: the views may be gone
            return
        self._row_shown_at = time.monotonic()
        for job_id in waiting:
            job = self.job(job_id)
            if job is not None:
                self._changed(job)

    def _on_preview_waiting(self) -> None:
        wait = self._preview_shown_at + MIN_PREVIEW_INTERVAL_S - time.monotonic()
        if wait > 0:
            if not self._preview_timer.isActive():
                self._preview_timer.start(max(1, round(wait * 1000)))
            return
        self._deliver_preview()

    def _deliver_preview(self) -> None:
        item = self.previews.take()
        if item is None:
            return
        self._preview_shown_at = time.monotonic()
        self.last_preview = item
        self.jobPreview.emit(item.job_id, item.image)

    def _on_image_ready(self, job_id: int, image: JobImage) -> None:
        job = self.job(job_id)
        if job is not None and image.path:
            job.images.append(image.path)
        if image.save_error is not None:
            self.notice.emit(image.save_error.message)
        self.imageReady.emit(job_id, image)

    def _on_task_progress(self, job_id: int, done: int, total: int, text: str) -> None:
        job = self.job(job_id)
        if job is not None:
            job.items_done, job.items_total, job.detail = done, total, text
            job.step = job.total = 0  # the next item's steps start again
            self._changed(job)
        self.taskProgress.emit(job_id, done, total, text)

    def _on_task_image(self, job_id: int, path: str) -> None:
        job = self.job(job_id)
        if job is not None:
            job.images.append(path)

    def _on_notice(self, job_id: int, message: str) -> None:
        self.notice.emit(message)

    def _on_job_done(self, job_id: int, state: str, failure: Failure | None) -> None:
        self.previews.clear(job_id)  # a preview not shown yet comes after the result: gone
        job = self.job(job_id)
        self._tokens.pop(job_id, None)
        self._tasks.pop(job_id, None)
        if self._running == job_id:
            self._running = None
        if job is not None:
            job.ended = time.time()
            job.failure = failure
            self._set_state(job, JobState(state))
        if failure is not None:
            self.jobFailed.emit(job_id, failure)
        self.jobFinished.emit(job_id, state)
        self._dispatch()
        self._emit_busy()

    # ====================================================================== helpers
    def _set_state(self, job: Job, state: JobState) -> None:
        job.state = state
        self._changed(job)

    def _changed(self, job: Job) -> None:
        try:
            row = self._jobs.index(job)
        except ValueError:
            return
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def _cancel_task(self, job_id: int) -> None:
        entry = self._tasks.get(job_id)
        if entry is None or entry[1] is None:
            return
        try:
            entry[1]()
        except Exception:
            log.exception("cancelling task %s failed", job_id)

    def _emit_busy(self) -> None:
        self.busyChanged.emit(int(self.busy))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
