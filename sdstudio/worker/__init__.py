"""The one long-lived worker thread that owns the engine, and the job queue the window uses.

Only this package and ``sdstudio.app`` touch ``sdstudio.engine``, and only lazily, inside the
worker thread.
"""

from sdstudio.worker.engine_worker import (
    EngineFactory,
    EngineLike,
    EngineWorker,
    TaskContext,
    WorkerTask,
)
from sdstudio.worker.jobs import Failure, Job, JobImage, JobState
from sdstudio.worker.queue import JobQueue, running_threads

__all__ = [
    "EngineFactory",
    "EngineLike",
    "EngineWorker",
    "Failure",
    "Job",
    "JobImage",
    "JobQueue",
    "JobState",
    "TaskContext",
    "WorkerTask",
    "running_threads",
]
