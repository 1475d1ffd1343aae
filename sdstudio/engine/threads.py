"""The engine's CPU thread count, following the load of other processes while it generates.

The decision is :func:`sdstudio.core.threads.choose_threads`; this module measures its input
and applies it with ``torch.set_num_threads``. Between denoising steps (at most every
:data:`INTERVAL_S`), it reads how much CPU time the CPUs this process may use spent busy and
subtracts this process's own CPU time (all its threads: torch's, the window's, the batch
writer's): what is left is what other programs took. One reading costs ~30 us (psutil's
per-CPU times and the process's CPU time).

The thread count is the process's (torch has one pool), so the governor is one per process.
On CUDA the host threads only launch kernels and convert tensors: the same rule applies to
them (a CUDA run rarely has more than a thread busy on the host).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil
import torch

from sdstudio.core import threads as policy

INTERVAL_S = 0.4  # shortest time between two decisions (several steps on a fast GPU)


def _busy_seconds(cpu_ids: tuple[int, ...] | None) -> float:
    """CPU seconds spent busy so far on the given CPUs (all when None): not idle, not
    waiting for I/O."""
    per_cpu = psutil.cpu_times(percpu=True)
    if cpu_ids:
        per_cpu = [per_cpu[i] for i in cpu_ids if i < len(per_cpu)]
    total = 0.0
    for t in per_cpu:
        total += sum(t) - t.idle - getattr(t, "iowait", 0.0)
    return total


class ThreadGovernor:
    """Sets torch's thread count from other processes' load; ``fixed`` > 0 pins it."""

    def __init__(self, setup: policy.ThreadSetup, fixed: int = 0, *,
                 busy: Callable[[], float] | None = None,
                 own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic,
                 apply: Callable[[int], None] = torch.set_num_threads,
                 current: Callable[[], int] = torch.get_num_threads) -> None:
        self.setup = setup
        self._busy = busy or (lambda: _busy_seconds(setup.cpu_ids))
        self._own, self._clock, self._apply, self._current = own, clock, apply, current
        self._lock = threading.Lock()
        self._mark: tuple[float, float, float] | None = None
        self.threads = 0
        self.other_load = 0.0
        self.changes = 0
        self.fixed = 0
        self.set_fixed(fixed)

    @property
    def adaptive(self) -> bool:
        return not self.fixed and self.setup.adaptive

    def set_fixed(self, fixed: int) -> None:
        """A fixed thread count (the "CPU threads" setting), or 0 for automatic."""
        self.fixed = max(0, min(int(fixed), policy.MAX_CPU_THREADS))
        if self.fixed:
            self._set(self.fixed)
        elif self.adaptive:
            self._set(self.setup.cpus)
        else:  # the person's OMP_NUM_THREADS (or no tuning): leave torch's count alone
            self.threads = self._current()

    def _set(self, count: int) -> None:
        if count != self.threads:
            self._apply(count)
            self.threads = count
            self.changes += 1

    def start(self) -> None:
        """A generation begins: measure from here (load seen between runs does not count:
        an idle pause says nothing about what competes with the next steps)."""
        if self.adaptive:
            self._mark = (self._clock(), self._busy(), self._own())

    def tick(self) -> None:
        """Between steps: when the interval has passed, re-decide the thread count."""
        if not self.adaptive or self._mark is None:
            return
        now = self._clock()
        if now - self._mark[0] < INTERVAL_S:
            return
        with self._lock:
            mark = self._mark
            if mark is None:
                return
            busy, own = self._busy(), self._own()
            wall = now - mark[0]
            self.other_load = max(0.0, ((busy - mark[1]) - (own - mark[2])) / wall)
            self._mark = (now, busy, own)
            self._set(policy.choose_threads(self.setup.cpus, self.other_load, self.threads))

    def describe(self) -> str:
        how = f"fixed at {self.fixed}" if self.fixed else (
            "following other programs' load" if self.adaptive else "as set in the environment")
        return f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} ({how}; " \
               f"{self.setup.describe()})"


_GOVERNOR: ThreadGovernor | None = None


def governor() -> ThreadGovernor:
    """The process's governor (created on first use, from the set-up decided at import)."""
    global _GOVERNOR
    if _GOVERNOR is None:
        setup = policy.current_setup() or policy.configure_process()
        _GOVERNOR = ThreadGovernor(setup)
    return _GOVERNOR
