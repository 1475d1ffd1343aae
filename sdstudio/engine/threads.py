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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
        self._mark: tuple[float, float, float] | None = None
        self.threads = 0
        self.other_load = 0.0
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

    def start(self) -> None:
        """A generation begins: measure from here (load seen between runs does not count:
        an idle pause says nothing about what competes with the next steps)."""
        if self.adaptive:
            self._mark = (self._clock(), self._busy(), self._own())

    def tick(self) -> None:
        """Between steps (the worker's thread): when the interval has passed, re-decide the
        thread count."""
        mark = self._mark
        if mark is None or not self.adaptive:
            return
        now = self._clock()
        if now - mark[0] < INTERVAL_S:
            return
        busy, own = self._busy(), self._own()
        self.other_load = max(0.0, ((busy - mark[1]) - (own - mark[2])) / (now - mark[0]))
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


# ----------------------------------------------------------------- batch-parallel UNet calls
class BatchParallel:
    """On the CPU, one UNet call of a batch of ``B`` >= 2 rows (classifier-free guidance
    doubles every batch: negative and positive prompt) runs as up to ``cpus`` slices of the
    batch on as many threads at once, each slice with ``threads // slices`` torch threads.

    Why: torch splits every operator across its OpenMP team, and the team meets at a barrier
    after each of the thousands of operators of a step; when another program holds a core,
    each barrier waits for the thread that lost it. The slices share nothing until the step's
    end, so a lost core delays one slice by one time slice, not every operator (bench/busy.py:
    a demo-model step 235 ms with a busy process beside it vs 503 ms batched; idle 160 ms vs
    189 ms, the barriers' cost gone). The rows are independent in a UNet (no batch
    normalisation; the cross-attention mask is per row), so the result equals the batched call
    within float rounding.

    Installed on the UNet instance (``forward`` wrapped): pre-hooks such as the
    cross-attention mask run first and their per-row kwargs are sliced with the rest."""

    def __init__(self, unet: Any, gov: ThreadGovernor) -> None:
        self.unet = unet
        self.gov = gov
        self.inner = unet.forward
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._local = threading.local()
        self.calls = 0  # sliced calls (tests, benchmarks)

    def slices(self, rows: int) -> int:
        """How many slices a batch of ``rows`` runs as: up to the usable CPUs (the fixed
        setting's count; torch's count when the person set OMP_NUM_THREADS)."""
        gov = self.gov
        if not gov.setup.tuned:
            return 1
        total = gov.fixed or (gov.setup.cpus if gov.adaptive else gov.threads)
        return max(1, min(rows, total))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sample = args[0] if args else kwargs.get("sample")
        rows = int(sample.shape[0]) if isinstance(sample, torch.Tensor) and sample.dim() else 0
        parts = self.slices(rows) if rows >= 2 else 1
        if parts < 2:
            return self.inner(*args, **kwargs)
        threads = max(1, (self.gov.threads or self.gov.setup.cpus) // parts)
        # autograd and inference modes are per thread: the slices run in the caller's
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        pool = self._executor(parts)
        futures = [pool.submit(self._run, threads, modes, _slice(args, rows, a, b),
                               _slice(kwargs, rows, a, b)) for a, b in _bounds(rows, parts)]
        outs = [f.result() for f in futures]
        self.calls += 1
        return _join(outs)

    def _run(self, threads: int, modes: tuple[bool, bool], args: Any, kwargs: Any) -> Any:
        if getattr(self._local, "threads", 0) != threads:
            torch.set_num_threads(threads)  # this thread's own OpenMP team size
            self._local.threads = threads
        with torch.inference_mode(modes[1]), torch.set_grad_enabled(modes[0]):
            return self.inner(*args, **kwargs)

    def _executor(self, size: int) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_size < size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(size, thread_name_prefix="sdstudio-unet")
            self._pool_size = size
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.unet.__dict__.get("forward") is self:
            del self.unet.forward


def parallel_batches(unet: Any) -> BatchParallel:
    """Wrap a CPU UNet's calls in :class:`BatchParallel` (once; returns the wrapper)."""
    current = unet.__dict__.get("forward")
    if isinstance(current, BatchParallel):
        return current
    wrapper = BatchParallel(unet, governor())
    unet.forward = wrapper
    return wrapper


def release_batches(unet: Any) -> None:
    """Undo :func:`parallel_batches` (its threads end): the model is being freed."""
    current = getattr(unet, "__dict__", {}).get("forward")
    if isinstance(current, BatchParallel):
        current.close()


def _bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    step, extra = divmod(rows, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + step + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def _slice(value: Any, rows: int, a: int, b: int) -> Any:
    """Rows a:b of every tensor whose first dimension is the batch, through tuples, lists and
    dicts; everything else (a scalar timestep, flags, processors' kwargs) as it is."""
    if isinstance(value, torch.Tensor):
        return value[a:b] if value.dim() and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: _slice(v, rows, a, b) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_slice(v, rows, a, b) for v in value)
    return value


def _join(outs: list[Any]) -> Any:
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    if isinstance(first, tuple) and not hasattr(first, "_fields"):
        return tuple(_join([o[i] for o in outs]) for i in range(len(first)))
    if hasattr(first, "sample"):  # UNet2DConditionOutput
        return type(first)(sample=torch.cat([o.sample for o in outs]))
    raise TypeError(f"cannot join UNet outputs of type {type(first).__name__}")
