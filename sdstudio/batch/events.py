"""Typed messages the batch runner reports through its plain callback (CLI, window)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdstudio.batch.plan import WorkUnit
from sdstudio.core.events import EngineEvent


@dataclass(frozen=True)
class BatchPlanned:
    """The plan is known: ``total`` units, ``already_done`` of them finished by earlier runs,
    ``assigned`` to this process (``rank`` of ``world``)."""

    run_id: str
    total: int
    already_done: int
    assigned: int
    units: tuple[WorkUnit, ...]  # every unit of the plan
    done_slots: frozenset[tuple[str, int]]  # (key, image) already done
    resumed: bool
    out_dir: Path
    rank: int = 0
    world: int = 1
    removed_temp_files: int = 0
    adopted: int = 0


@dataclass(frozen=True)
class UnitStarted:
    unit: WorkUnit
    position: int  # 1-based among this process's assigned units
    assigned: int


@dataclass(frozen=True)
class UnitEngineEvent:
    """An engine event (Progress, Preview, LoadProgress, ModelReady, Notice) during a unit."""

    unit: WorkUnit
    event: EngineEvent


@dataclass(frozen=True)
class UnitDone:
    unit: WorkUnit
    path: Path
    elapsed_s: float
    image: object = None  # the PIL image (for the gallery); None for adopted images


@dataclass(frozen=True)
class UnitFailed:
    unit: WorkUnit
    reason: str
    kind: str = "Error"
    details: str = ""


@dataclass(frozen=True)
class BatchPaused:
    paused: bool


@dataclass(frozen=True)
class BatchSummary:
    total: int
    done: int  # made by this run (this process)
    failed: int
    skipped: int  # already done before this run
    cancelled: bool
    elapsed_s: float
    out_dir: Path
    failures: tuple[tuple[WorkUnit, str], ...] = field(default=())
    adopted: int = 0
    assigned: int = 0
    not_run: int = 0  # assigned but not reached (cancelled)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled

    def line(self) -> str:
        parts = [f"{self.done} done", f"{self.failed} failed",
                 f"{self.skipped} skipped as already done"]
        if self.adopted:
            parts.append(f"{self.adopted} recovered after a crash")
        if self.cancelled:
            parts.append(f"cancelled with {self.not_run} not run")
        per = f", {self.elapsed_s / self.done:.2f} s/image" if self.done else ""
        return f"{', '.join(parts)} ({self.total} in all, {self.elapsed_s:.1f} s{per})"


BatchEvent = (
    BatchPlanned | UnitStarted | UnitEngineEvent | UnitDone | UnitFailed | BatchPaused
    | BatchSummary
)
BatchCallback = Callable[[BatchEvent], None]


def ignore_batch_event(event: BatchEvent) -> None:
    """Default callback."""
