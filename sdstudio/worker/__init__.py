"""The one long-lived worker thread that owns the engine, and the job queue the window uses.

Only this package and ``sdstudio.app`` touch ``sdstudio.engine``, and only lazily, inside the
worker thread.
"""

from sdstudio.ui import qtcompat as _qtcompat

_qtcompat.apply()  # before any signal is emitted (PySide6 6.12 emit refcount bug)

from sdstudio.worker.engine_worker import EngineFactory, EngineLike, EngineWorker  # noqa: E402
from sdstudio.worker.jobs import Failure, Job, JobImage, JobState  # noqa: E402
from sdstudio.worker.queue import JobQueue, running_threads  # noqa: E402

__all__ = [
    "EngineFactory",
    "EngineLike",
    "EngineWorker",
    "Failure",
    "Job",
    "JobImage",
    "JobQueue",
    "JobState",
    "running_threads",
]
