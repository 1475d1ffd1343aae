"""The batch's writer thread: saves each decoded image, then appends its manifest record.

Saving overlaps the next image's generation: one writer thread (:class:`Saver`) takes the decoded
images in plan order and, for each, saves it and then appends its record — the same writes in
the same order as before, only on another thread; failure records go through the same thread,
so one thread alone writes this process's manifest and its lines keep the plan's order. All of
a unit's fsyncs are kept. Batching the folder fsync over several images was considered and
rejected: a record may only be made durable after the name it points to, and with the saving
off the critical path the fsyncs cost the generation nothing but a little CPU. Still at most
one temp file and one image without its record after ``kill -9``: one thread saves, one image
at a time. What changes: an image decoded but not yet saved when the process is killed is made
again on resume, as an image killed between its decode and its save always was — normally only
the one being saved; when the disk is slower than the generation, also the one queued and the
one waiting to be queued; and a unit's ``UnitDone`` can arrive after the next unit's
``UnitStarted``. All events are still sent from the thread that calls
``BatchRunner.run`` (finished saves are reported at the next engine event, before a pause, a failure
report and the summary); pausing and the end of the run wait until every queued image is saved.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from sdstudio.batch.plan import WorkUnit
from sdstudio.core.errors import SDStudioError, describe_error
from sdstudio.core.events import ImageReady
from sdstudio.core.request import GenerationInfo
from sdstudio.storage.manifest import ManifestWriter, UnitRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    """What the writer thread did with one unit: saved (``path``) or failed (``reason``)."""

    unit: WorkUnit
    path: Path | None = None
    elapsed_s: float = 0.0
    image: object = None
    reason: str = ""
    kind: str = "Error"
    details: str = ""


@dataclass(frozen=True)
class SaveJob:
    """Save a decoded image, then append its ``done`` record."""

    unit: WorkUnit
    ready: ImageReady
    info: GenerationInfo  # ``ready.info`` with the batch tag
    gen_s: float  # the generation's time; the save's is added


@dataclass(frozen=True)
class FailJob:
    """Append the ``failed`` record of a unit that was not made (or not saved)."""

    unit: WorkUnit
    reason: str
    kind: str
    details: str
    elapsed_s: float

    @classmethod
    def of(cls, unit: WorkUnit, exc: Exception, elapsed_s: float) -> FailJob:
        """The failure of ``unit`` by ``exc``; logged with its traceback unless it is one of
        SD Studio's errors (a message meant for the person)."""
        if not isinstance(exc, SDStudioError):
            log.error("batch unit %d failed", unit.index, exc_info=exc)
        details = getattr(exc, "details", "") or "".join(traceback.format_exception(exc))
        return cls(unit, describe_error(exc), type(exc).__name__, details, elapsed_s)


@dataclass(frozen=True)
class StopJob:
    """Ends the writer thread, after every job queued before it."""


WriterJob = SaveJob | FailJob | StopJob


class Saver:
    """The writer thread: saves each image, then appends its manifest record, in submission
    order (see the module docstring). ``save``/``fail`` queue work (blocking while one unit
    waits, so a slow disk slows the batch instead of filling the memory); ``finished`` returns
    what is done so far without waiting, ``flush`` waits for everything queued, ``close`` also
    stops the thread. A manifest that cannot be written stops the writer; the error is raised
    in the calling thread by its next ``save``, ``fail``, ``finished``, ``flush`` or ``close``, so
    it ends the run as it did when the runner wrote the manifest itself."""

    def __init__(self, writer: ManifestWriter, out_dir: Path, pattern: str, run_id: str,
                 rank: int) -> None:
        self._writer = writer
        self._out_dir = out_dir
        self._pattern = pattern
        self._run_id = run_id
        self._rank = rank
        self._jobs: queue.Queue[WriterJob] = queue.Queue(maxsize=1)
        self._results: collections.deque[Saved] = collections.deque()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sdstudio-batch-writer",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ calling thread
    def save(self, unit: WorkUnit, ready: ImageReady, info: GenerationInfo, gen_s: float) -> None:
        self._put(SaveJob(unit, ready, info, gen_s))

    def fail(self, unit: WorkUnit, exc: Exception, gen_s: float) -> None:
        self._put(FailJob.of(unit, exc, gen_s))

    def has_finished(self) -> bool:
        return bool(self._results)

    def finished(self, raise_error: bool = True) -> list[Saved]:
        if raise_error:
            self._raise()
        out = []
        while self._results:
            out.append(self._results.popleft())
        return out

    def flush(self) -> list[Saved]:
        self._jobs.join()
        return self.finished()

    def close(self) -> list[Saved]:
        if self._thread.is_alive():
            self._jobs.put(StopJob())
            self._thread.join()
        return self.finished()

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc: object) -> None:
        # on an error in the calling thread (a KeyboardInterrupt, say) the queued images are
        # still saved before it propagates; their reports are dropped with the run
        if self._thread.is_alive():
            self._jobs.put(StopJob())
            self._thread.join()

    def _put(self, job: WriterJob) -> None:
        self._raise()
        self._jobs.put(job)

    def _raise(self) -> None:
        if self._error is not None:  # stays set: every later call raises it too
            raise self._error

    # -------------------------------------------------------------------- writer thread
    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if isinstance(job, StopJob):
                    return
                if self._error is None:  # after a manifest error nothing more is written
                    self._results.append(self._do(job))
            except BaseException as exc:  # the manifest could not be written
                self._error = exc
            finally:
                self._jobs.task_done()

    def _do(self, job: SaveJob | FailJob) -> Saved:
        if isinstance(job, FailJob):
            return self._fail(job)
        return self._save(job)

    def _save(self, job: SaveJob) -> Saved:
        from sdstudio.storage.png import save_image

        t0 = time.perf_counter()
        unit, ready = job.unit, job.ready
        try:
            path = save_image(ready.image, ready.request, job.info, self._out_dir, self._pattern)
        except Exception as exc:  # the disk refused this image: recorded, the batch goes on
            return self._fail(FailJob.of(unit, exc, job.gen_s + time.perf_counter() - t0))
        elapsed = job.gen_s + time.perf_counter() - t0  # the unit's own work, not its queue wait
        rel = path.relative_to(self._out_dir).as_posix()
        self._writer.write_record(UnitRecord(
            "done", self._run_id, unit.index, unit.item, unit.line_no, unit.image,
            unit.key, ready.request.seed, file=rel, rank=self._rank, elapsed_s=elapsed,
        ))
        return Saved(unit, path=path, elapsed_s=elapsed, image=ready.image)

    def _fail(self, job: FailJob) -> Saved:
        unit = job.unit
        self._writer.write_record(UnitRecord(
            "failed", self._run_id, unit.index, unit.item, unit.line_no, unit.image,
            unit.key, unit.seed, reason=job.reason, rank=self._rank, elapsed_s=job.elapsed_s,
        ))
        return Saved(unit, reason=job.reason, kind=job.kind, details=job.details)
