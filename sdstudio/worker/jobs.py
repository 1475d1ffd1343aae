"""Jobs and the values the worker sends back to the window.

Pure data (no engine, no torch): the window and the tests build and read these freely.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from sdstudio.core.errors import CancelledError, SDStudioError, describe_error
from sdstudio.core.request import GenerationInfo, GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image
    from PySide6.QtGui import QImage


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Failure:
    """One failure, fit to show a person: ``message`` is one line, ``details`` is the rest
    (the engine's details and the traceback)."""

    message: str
    details: str = ""
    kind: str = "Error"  # the exception class name: ModelError, RequestError, ...
    job_id: int | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, job_id: int | None = None,
                       context: str = "") -> Failure:
        message = describe_error(exc)
        extra = exc.details if isinstance(exc, SDStudioError) else ""
        if context:
            message = f"{context}: {message}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        details = "\n\n".join(part for part in (extra.strip(), tb.strip()) if part)
        return cls(message=message, details=details, kind=type(exc).__name__, job_id=job_id)

    @property
    def cancelled(self) -> bool:
        return self.kind == CancelledError.__name__


@dataclass
class JobImage:
    """One finished image of a job: where it was saved (``path`` is "" when saving failed or
    was not asked for) and a QImage made in the worker thread so the window never converts."""

    job_id: int
    index: int
    path: str
    request: GenerationRequest
    info: GenerationInfo
    image: Image
    qimage: QImage | None = None
    save_error: Failure | None = None


@dataclass
class Job:
    """One entry of the queue: a generation (``kind == "generate"``), or a task that runs on
    the worker thread with the worker's engine (``kind == "task"``, a batch for instance; its
    ``request`` then only describes its defaults, and ``items_done``/``items_total``/``detail``
    its own progress)."""

    id: int
    request: GenerationRequest
    label: str = ""
    source: str = "window"  # who submitted it: "window", "batch", ...
    save: bool = True
    kind: str = "generate"  # "generate" or "task"
    items_done: int = 0
    items_total: int = 0
    detail: str = ""  # a task's own progress line ("3/10 images · 1.2 s/image")
    state: JobState = JobState.QUEUED
    step: int = 0
    total: int = 0
    run: int = 1
    runs: int = 1
    s_per_it: float = 0.0
    images: list[str] = field(default_factory=list)
    failure: Failure | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        prompt = " ".join(self.request.prompt.split()) or "(empty prompt)"
        return prompt if len(prompt) <= 60 else prompt[:57] + "…"

    @property
    def is_task(self) -> bool:
        return self.kind == "task"

    @property
    def fraction(self) -> float | None:
        """How far a running job is, 0..1 (None when not running or not known yet)."""
        if self.state is not JobState.RUNNING:
            return None
        step = self.step / self.total if self.total else 0.0
        if self.is_task:
            if not self.items_total:
                return None
            return min(1.0, (self.items_done + step) / self.items_total)
        if not self.total:
            return None
        return min(1.0, ((self.run - 1) + step) / max(1, self.runs))

    @property
    def summary(self) -> str:
        """One line for the queue list: state and progress."""
        if self.is_task:
            return self._task_summary()
        r = self.request
        size = f"{r.width}×{r.height}"
        mode = r.mode.value
        if self.state is JobState.RUNNING:
            if self.total:
                runs = f" · run {self.run}/{self.runs}" if self.runs > 1 else ""
                return f"running · step {self.step}/{self.total}{runs}"
            return "running · starting…"
        if self.state is JobState.DONE:
            n = len(self.images)
            took = f" in {self.ended - self.started:.1f} s" if self.ended and self.started else ""
            return f"done · {n} image{'s' if n != 1 else ''}{took}"
        if self.state is JobState.FAILED and self.failure:
            return f"failed · {self.failure.message}"
        if self.state is JobState.CANCELLED:
            return "cancelled"
        return f"queued · {mode} {size}, {r.steps} steps, {r.image_count} image" + (
            "s" if r.image_count != 1 else "")

    def _task_summary(self) -> str:
        if self.state is JobState.RUNNING:
            parts = [self.detail or (f"{self.items_done}/{self.items_total} images"
                                     if self.items_total else "starting…")]
            if self.total and self.step:
                parts.append(f"step {self.step}/{self.total}")
            return "running · " + " · ".join(parts)
        if self.state is JobState.DONE:
            n = len(self.images)
            took = f" in {self.ended - self.started:.1f} s" if self.ended and self.started else ""
            extra = f" · {self.detail}" if self.detail else ""
            return f"done · {n} image{'s' if n != 1 else ''}{took}{extra}"
        if self.state is JobState.FAILED and self.failure:
            return f"failed · {self.failure.message}"
        if self.state is JobState.CANCELLED:
            n = len(self.images)
            return f"cancelled after {n} image{'s' if n != 1 else ''}" if n else "cancelled"
        return "queued · " + (self.detail or "waits for the jobs before it")
