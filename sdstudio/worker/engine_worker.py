"""EngineWorker: the QObject that lives in the one worker QThread and owns the Engine.

The engine is created *inside* the thread (so torch and diffusers are imported there, after the
window is visible). Every call arrives as a queued signal from the GUI thread and runs to its
end in the worker thread; every exception becomes a failure signal, never a dead thread.
The engine reports through its plain callback; this class relays each event as a Qt signal
with the job id. Images are saved here (off the GUI thread) and converted to QImage here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError
from sdstudio.core.events import (
    EngineEvent,
    ImageReady,
    LoadProgress,
    ModelReady,
    Notice,
    Preview,
    Progress,
)
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.worker.jobs import Failure, JobImage, JobState
from sdstudio.worker.previews import PreviewSlot, to_qimage

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    """What the worker needs of ``sdstudio.engine.Engine`` (tests inject a scriptable fake)."""

    def configure(self, settings: EngineSettings) -> None: ...

    def load(self, model: str = "", on_event: Any = ..., cancel: CancelToken | None = None
             ) -> ModelReady: ...

    def generate(self, request: GenerationRequest, on_event: Any = ...,
                 cancel: CancelToken | None = None) -> list[ImageReady]: ...

    def unload(self) -> None: ...

    def upscale_file(self, source: str | Path, *, upscaler: str, scale: float,
                     out_dir: str | Path, tile: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     cancel: CancelToken | None = None, allow_path: bool = False) -> Path: ...


EngineFactory = Callable[[EngineSettings], EngineLike]


class TaskContext:
    """What a task run by :meth:`sdstudio.worker.JobQueue.run_exclusive` gets, in the worker
    thread: the worker's ``engine`` (the one loaded model), the job's ``cancel`` token, and
    ways to report. Every method may be called from the worker thread only."""

    def __init__(self, worker: EngineWorker, job_id: int, engine: EngineLike,
                 cancel: CancelToken) -> None:
        self._worker = worker
        self.job_id = job_id
        self.engine = engine
        self.cancel = cancel

    def report(self, done: int, total: int, text: str = "") -> None:
        """The task's own progress: ``done`` of ``total`` items, and one line for the queue."""
        self._worker.taskProgress.emit(self.job_id, int(done), int(total), str(text))

    def image_saved(self, path: str) -> None:
        """An image the task wrote (counted in the job's images)."""
        self._worker.taskImage.emit(self.job_id, str(path))

    def engine_event(self, event: EngineEvent) -> None:
        """Relay an engine event of the task like a job's: step progress, model loads and
        notices (previews are not relayed: the task's own view shows its results)."""
        worker = self._worker
        if isinstance(event, Progress):
            worker.jobProgress.emit(self.job_id, event)
        elif isinstance(event, ModelReady):
            worker.loaded = event
            worker.modelReady.emit(event)
        elif isinstance(event, LoadProgress):
            worker.loadProgress.emit(event)
        elif isinstance(event, Notice):
            worker.jobNotice.emit(self.job_id, event.message)


WorkerTask = Callable[[TaskContext], object]


def default_engine_factory(settings: EngineSettings) -> EngineLike:
    """Import the engine lazily: this runs in the worker thread, never at window start-up,
    and imports torch & co. in a way that keeps the GUI thread responsive meanwhile."""
    from sdstudio.engine.startup import import_engine

    import_engine()
    from sdstudio.engine import Engine

    return Engine(settings)


def pil_to_qimage(image: Any) -> QImage:
    """PIL -> QImage (a deep copy, safe to hand to another thread)."""
    return to_qimage(image)


class EngineWorker(QObject):
    """Runs in the worker thread. Use it through :class:`sdstudio.worker.JobQueue`."""

    # --- out (worker thread -> GUI), every payload a core event or a worker dataclass
    engineStarted = Signal()
    engineFailed = Signal(object)  # Failure
    loadStarted = Signal(str)
    loadProgress = Signal(object)  # LoadProgress
    modelReady = Signal(object)  # ModelReady
    loadFailed = Signal(object)  # Failure
    jobStarted = Signal(int)
    jobProgress = Signal(int, object)  # job id, Progress
    previewWaiting = Signal()  # a preview is in the PreviewSlot (sent when it was empty)
    imageReady = Signal(int, object)  # job id, JobImage
    jobNotice = Signal(int, str)  # job id (0 = none), message
    jobDone = Signal(int, str, object)  # job id, JobState value, Failure | None
    taskProgress = Signal(int, int, int, str)  # job id, items done, items in all, text
    taskImage = Signal(int, str)  # job id, path of an image the task saved
    modelsListed = Signal(object)  # list[dict]
    finished = Signal()

    def __init__(self, factory: EngineFactory, settings: EngineSettings,
                 previews: PreviewSlot | None = None) -> None:
        super().__init__()
        self._factory = factory
        self._settings = settings
        self._engine: EngineLike | None = None
        self._engine_failure: Failure | None = None
        self.loaded: ModelReady | None = None
        self.previews = previews or PreviewSlot()  # latest only, scaled for the view

    # ------------------------------------------------------------------------ slots
    @Slot()
    def init_engine(self) -> None:
        try:
            self._engine = self._factory(self._settings)
        except BaseException as exc:
            self._engine_failure = Failure.from_exception(exc, context="The engine could not start")
            log.exception("engine start failed")
            self.engineFailed.emit(self._engine_failure)
            return
        self.engineStarted.emit()

    @Slot(object)
    def configure(self, settings: EngineSettings) -> None:
        self._settings = settings
        if self._engine is None:
            return
        try:
            self._engine.configure(settings)
        except BaseException as exc:
            self.jobNotice.emit(0, f"Settings not applied: {Failure.from_exception(exc).message}")

    @Slot(str, object)
    def load_model(self, model: str, cancel: CancelToken) -> None:
        self.loadStarted.emit(model)
        engine = self._engine
        if engine is None:
            failure = self._engine_failure or Failure("The engine is not running")
            self.loadFailed.emit(failure)
            return

        def on_event(event: EngineEvent) -> None:
            if isinstance(event, LoadProgress):
                self.loadProgress.emit(event)
            elif isinstance(event, Notice):
                self.jobNotice.emit(0, event.message)

        try:
            ready = engine.load(model, on_event, cancel)
        except BaseException as exc:
            log.info("model load failed: %s", exc)
            self.loadFailed.emit(Failure.from_exception(exc))
            return
        self.loaded = ready
        self.modelReady.emit(ready)

    @Slot(int, object, object, object)
    def run_job(self, job_id: int, request: GenerationRequest, cancel: CancelToken,
                save: tuple[str, str] | None) -> None:
        """``save`` is ``(out_dir, pattern)`` or None (images are then only reported)."""

        def body(engine: EngineLike) -> JobState:
            saved = 0

            def on_event(event: EngineEvent) -> None:
                nonlocal saved
                if isinstance(event, Progress):
                    self.jobProgress.emit(job_id, event)
                elif isinstance(event, Preview):
                    try:
                        if self.previews.put(job_id, event.step, event.image):
                            self.previewWaiting.emit()
                    except Exception:
                        log.debug("preview conversion failed", exc_info=True)
                elif isinstance(event, ImageReady):
                    self._deliver(job_id, event, save)
                    saved += 1
                elif isinstance(event, ModelReady):
                    self.loaded = event
                    self.modelReady.emit(event)
                elif isinstance(event, LoadProgress):
                    self.loadProgress.emit(event)
                elif isinstance(event, Notice):
                    self.jobNotice.emit(job_id, event.message)

            results = engine.generate(request, on_event, cancel)
            # An engine that returns images without reporting them still gets them saved.
            for event in list(results or [])[saved:]:
                self._deliver(job_id, event, save)
            return JobState.DONE

        self._run_guarded(job_id, cancel, "job", body)

    @Slot(int, object, object)
    def run_task(self, job_id: int, task: WorkerTask, cancel: CancelToken) -> None:
        """Run ``task(context)`` here, with this thread's engine; nothing else runs meanwhile.
        CancelledError (or a cancelled token) ends it as cancelled; any other exception
        fails the job with a one-line message."""

        def body(engine: EngineLike) -> JobState:
            task(TaskContext(self, job_id, engine, cancel))
            return JobState.CANCELLED if cancel.cancelled else JobState.DONE

        self._run_guarded(job_id, cancel, "task", body)

    def _run_guarded(self, job_id: int, cancel: CancelToken, what: str,
                     body: Callable[[EngineLike], JobState]) -> None:
        """The frame every job and task runs in: skipped when already cancelled, failed when
        the engine is not running, and every outcome reported exactly once by ``jobDone``
        (CancelledError = cancelled; any other exception = failed, with a one-line cause)."""
        if cancel.cancelled:
            self.jobDone.emit(job_id, JobState.CANCELLED.value, None)
            return
        self.jobStarted.emit(job_id)
        engine = self._engine
        if engine is None:
            failure = self._engine_failure or Failure("The engine is not running")
            self.jobDone.emit(job_id, JobState.FAILED.value,
                              Failure(failure.message, failure.details, failure.kind, job_id))
            return
        try:
            state = body(engine)
        except CancelledError:
            self.jobDone.emit(job_id, JobState.CANCELLED.value, None)
            return
        except BaseException as exc:
            log.info("%s %s failed: %s", what, job_id, exc)
            self.jobDone.emit(job_id, JobState.FAILED.value,
                              Failure.from_exception(exc, job_id=job_id))
            return
        self.jobDone.emit(job_id, state.value, None)

    @Slot(object)
    def list_models(self, settings: EngineSettings) -> None:
        models: list[dict[str, Any]] = []
        try:
            from sdstudio.core.paths import model_dir
            from sdstudio.engine import library

            # SD Studio's own checkpoint folder (downloads land there), then the configured
            for entry in library.scan((str(model_dir("checkpoint")), *settings.model_dirs)):
                data = _entry_dict(entry)
                if not data.get("problem"):
                    models.append(data)
        except BaseException as exc:
            log.info("listing models failed: %s", exc)
        self.modelsListed.emit(models)

    @Slot()
    def stop(self) -> None:
        """Free the engine, then say so: ``finished`` is connected to the thread's quit."""
        try:
            if self._engine is not None:
                self._engine.unload()
        except BaseException:
            log.debug("unload failed", exc_info=True)
        self._engine = None
        self.finished.emit()

    # ---------------------------------------------------------------------- helpers
    def _deliver(self, job_id: int, event: ImageReady, save: tuple[str, str] | None) -> None:
        path = ""
        save_error: Failure | None = None
        if save is not None:
            out_dir, pattern = save
            try:
                path = str(save_image(event, Path(out_dir), str(pattern)))
            except BaseException as exc:
                save_error = Failure.from_exception(exc, job_id, context="The image was not saved")
                log.warning("saving failed: %s", exc)
        try:
            qimage: QImage | None = pil_to_qimage(event.image)
        except Exception:
            qimage = None
        self.imageReady.emit(job_id, JobImage(job_id, event.index, path, event.request,
                                              event.info, event.image, qimage, save_error))


def save_image(event: ImageReady, out_dir: Path, pattern: str) -> Path:
    from sdstudio.storage.png import save_image as storage_save

    return storage_save(event.image, event.request, event.info, out_dir, pattern)


def _entry_dict(entry: Any) -> dict[str, Any]:
    """Normalise one model-library entry (a dataclass, a mapping or a path) to a dict with at
    least ``name`` and ``path``."""
    import dataclasses

    if isinstance(entry, dict):
        data = dict(entry)
    elif dataclasses.is_dataclass(entry) and not isinstance(entry, type):
        data = dataclasses.asdict(entry)
    elif isinstance(entry, (str, Path)):
        data = {"path": str(entry)}
    else:
        data = {k: getattr(entry, k) for k in dir(entry)
                if not k.startswith("_") and not callable(getattr(entry, k, None))}
    data["path"] = str(data.get("path", ""))
    data.setdefault("name", Path(data["path"]).name or data["path"])
    return data
