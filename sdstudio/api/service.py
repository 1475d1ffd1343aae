"""ApiService: the API's side of SD Studio's one job queue (GUI / main thread, Qt).

The HTTP server (``sdstudio.api.server``) runs in its own thread and never touches the engine:
every call goes through this object, which lives in the thread that owns the
:class:`~sdstudio.worker.JobQueue` (the window's, or ``sdstudio serve``'s own) and queues each
API call's runs as ordinary jobs there, marked as API jobs. So API jobs and the window's run
one at a time on the one worker and loaded model, in the order they were queued.

Server-thread methods (``submit``, ``cancel``, ``skip``, ``interrupt``, ``progress``, ...)
hand their work to the owning thread through :meth:`call` (a queued signal) and return a
``concurrent.futures.Future`` or plain data; nothing else crosses the threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, Qt, Signal, Slot
from PySide6.QtGui import QImage

from sdstudio.api.mapping import ApiOptions, ParsedCall
from sdstudio.core.events import ModelReady, Progress
from sdstudio.core.settings import Settings
from sdstudio.worker.jobs import Failure, JobImage, JobState
from sdstudio.worker.queue import JobQueue

log = logging.getLogger(__name__)

DEMO_TITLE = "SD Studio demo model (untrained)"  # /sd-models' name for SD Studio's "" model
API_LABEL = "API"


@dataclass
class ApiCall:
    """One txt2img / img2img call: its jobs (one per run) and what they gave. Written in the
    queue's thread; ``finished`` is set once every run has ended."""

    call: ParsedCall
    job_ids: list[int] = field(default_factory=list)
    images: list[JobImage] = field(default_factory=list)
    failure: Failure | None = None
    interrupted: bool = False
    skipped: bool = False
    open_runs: int = 0
    finished: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)


class ApiService(QObject):
    """Queues API calls on ``queue`` and answers the API's questions about SD Studio."""

    _invoke = Signal(object)

    def __init__(self, queue: JobQueue, settings: Settings, parent: QObject | None = None
                 ) -> None:
        super().__init__(parent)
        self.queue = queue
        self.settings = settings
        self.options = ApiOptions()
        self._calls: dict[int, ApiCall] = {}  # job id -> its call
        self._models: list[dict[str, Any]] = []
        self._models_event = threading.Event()
        self._preview: QImage | None = None
        self._progress: tuple[int, int] = (0, 0)  # step, total of the running job
        self._lock = threading.Lock()
        self._invoke.connect(self._run_invoked, Qt.ConnectionType.QueuedConnection)
        queue.imageReady.connect(self._on_image)
        queue.jobFinished.connect(self._on_finished)
        queue.jobFailed.connect(self._on_failed)
        queue.jobProgress.connect(self._on_progress)
        queue.jobPreview.connect(self._on_preview)
        queue.jobStarted.connect(self._on_started)
        queue.modelsListed.connect(self._on_models)

    # ------------------------------------------------------------------ thread hand-over
    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn()`` in this object's thread (from any thread); its result or exception
        comes back through the future."""
        future: Future[Any] = Future()
        self._invoke.emit((fn, future))
        return future

    @Slot(object)
    def _run_invoked(self, item: tuple[Callable[[], Any], Future[Any]]) -> None:
        fn, future = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    # -------------------------------------------------------------------------- settings
    def update_settings(self, settings: Settings) -> None:
        self.settings = settings

    # ----------------------------------------------------------------------------- calls
    def submit(self, call: ParsedCall) -> Future[ApiCall]:
        """Queue the call's runs (from any thread)."""
        return self.call(lambda: self._submit(call))

    def _submit(self, call: ParsedCall) -> ApiCall:
        api_call = ApiCall(call)
        runs = call.run_requests or [call.request]
        api_call.open_runs = len(runs)
        prompt = " ".join(call.request.prompt.split()) or "(empty prompt)"
        for i, request in enumerate(runs):
            suffix = f" ({i + 1}/{len(runs)})" if len(runs) > 1 else ""
            label = f"{API_LABEL}: {prompt[:50]}{suffix}"
            job_id = self.queue.submit_request(request, label=label, source="api",
                                               save=call.save_images)
            api_call.job_ids.append(job_id)
            self._calls[job_id] = api_call
        return api_call

    def cancel(self, api_call: ApiCall) -> None:
        """Cancel every run of a call (a client that went away)."""
        def run() -> None:
            for job_id in api_call.job_ids:
                self.queue.cancel(job_id)
        self.call(run)

    def interrupt(self) -> Future[bool]:
        """A1111's /interrupt: the running API call stops (all its runs); True if one ran."""
        def run() -> bool:
            current = self._running_call()
            if current is None:
                return False
            current.interrupted = True
            for job_id in current.job_ids:
                self.queue.cancel(job_id)
            return True
        return self.call(run)

    def skip(self) -> Future[bool]:
        """A1111's /skip: the running run of an API call stops, its next runs go on."""
        def run() -> bool:
            job = self.queue.running_job
            if job is None or job.id not in self._calls:
                return False
            self._calls[job.id].skipped = True
            return self.queue.cancel(job.id)
        return self.call(run)

    def abort_all(self) -> None:
        """Cancel every API job and let every waiting call answer at once (the server is
        stopping). Call it in this object's thread."""
        for api_call in list(self._calls.values()):
            api_call.interrupted = True
            for job_id in api_call.job_ids:
                self.queue.cancel(job_id)
            api_call.finished.set()

    def _running_call(self) -> ApiCall | None:
        job = self.queue.running_job
        return self._calls.get(job.id) if job is not None else None

    # ------------------------------------------------------------------- queue signals
    def _on_started(self, job_id: int) -> None:
        with self._lock:
            self._preview = None
            self._progress = (0, 0)

    def _on_progress(self, job_id: int, event: Progress) -> None:
        with self._lock:
            self._progress = (event.step, event.total)

    def _on_preview(self, job_id: int, image: QImage) -> None:
        with self._lock:
            self._preview = image

    def _on_image(self, job_id: int, image: JobImage) -> None:
        api_call = self._calls.get(job_id)
        if api_call is not None:
            api_call.images.append(image)

    def _on_failed(self, job_id: int, failure: Failure) -> None:
        api_call = self._calls.get(job_id)
        if api_call is not None and api_call.failure is None and not failure.cancelled:
            api_call.failure = failure
            for other in api_call.job_ids:  # the remaining runs would fail alike
                if other != job_id:
                    self.queue.cancel(other)

    def _on_finished(self, job_id: int, state: str) -> None:
        api_call = self._calls.pop(job_id, None)
        if api_call is None:
            return
        api_call.open_runs -= 1
        if state == JobState.CANCELLED.value and not (api_call.interrupted or api_call.skipped):
            api_call.interrupted = True  # cancelled from the window's queue
        if api_call.open_runs <= 0:
            api_call.images.sort(key=lambda im: (api_call.job_ids.index(im.job_id), im.index))
            api_call.finished.set()

    # ------------------------------------------------------------------------ progress
    def progress(self, with_image: bool) -> dict[str, Any]:
        """A1111's /progress answer for the running job (any job of the queue)."""
        def run() -> dict[str, Any]:
            job = self.queue.running_job
            queued = self.queue.pending_count
            if job is None:
                return {"progress": 0, "eta_relative": 0, "state": _state(0, 0, 0, 0, False,
                                                                          False, ""),
                        "current_image": None, "textinfo": None}
            api_call = self._calls.get(job.id)
            runs = len(api_call.job_ids) if api_call else max(1, job.runs)
            run_no = api_call.job_ids.index(job.id) if api_call else max(0, job.run - 1)
            with self._lock:
                step, total = self._progress
                preview = self._preview
            fraction = 0.01 + (run_no + (step / total if total else 0.0)) / runs
            elapsed = time.time() - (job.started or time.time())
            eta = max(0.0, elapsed / fraction - elapsed)
            image = _png_b64(preview) if with_image and preview is not None else None
            stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or time.time()))
            return {
                "progress": min(1.0, fraction), "eta_relative": eta,
                "state": _state(runs, run_no, step, total,
                                bool(api_call and api_call.interrupted),
                                bool(api_call and api_call.skipped), stamp,
                                job="api" if api_call else job.source),
                "current_image": image,
                "textinfo": f"{queued} queued" if queued else None,
            }
        return self.call(run).result(timeout=10)

    # -------------------------------------------------------------------------- models
    def models(self) -> list[dict[str, Any]]:
        """The models in SD Studio's model folders (``name``, ``path``, ``short_hash``...),
        as the worker last listed them."""
        return list(self._models)

    def refresh_models(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        self._models_event.clear()
        self.call(self.queue.refresh_models).result(timeout=10)
        self._models_event.wait(timeout)
        return self.models()

    def _on_models(self, models: Sequence[dict[str, Any]]) -> None:
        self._models = [dict(m) for m in models]
        self._models_event.set()

    def loaded(self) -> ModelReady | None:
        return self.queue.loaded

    def load_model(self, name: str) -> Future[None]:
        return self.call(lambda: self.queue.load_model(name))


def _state(count: int, no: int, step: int, steps: int, interrupted: bool, skipped: bool,
           stamp: str, job: str = "") -> dict[str, Any]:
    """A1111's ``shared.state.dict()``."""
    return {"skipped": skipped, "interrupted": interrupted, "job": job, "job_count": count,
            "job_timestamp": stamp or "0", "job_no": no, "sampling_step": step,
            "sampling_steps": steps}


def _png_b64(image: QImage) -> str:
    import base64

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")  # type: ignore[call-overload]  # PySide6 takes str
    buffer.close()
    return base64.b64encode(bytes(data.data())).decode("ascii")
