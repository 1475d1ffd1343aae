"""CPU threads for the engine: how many, and how they wait, so that a busy computer slows SD
Studio by about its fair share instead of an order of magnitude.

torch runs its CPU operators on an OpenMP thread team. Between two parallel regions the idle
threads of GNU OpenMP (libgomp, the runtime of torch's Linux builds) spin for up to
``GOMP_SPINCOUNT`` iterations (300,000 by default, milliseconds) before they sleep. On an idle
machine that keeps them hot; when another program holds one of the cores, every region waits
for the thread that lost its core while its partner spins, and a 2.7 s image took 28.5 s
(issue 18). Three decisions fix it:

* **Before torch is imported** (:func:`configure_process`, called by ``sdstudio.engine``'s
  package import, which every path to torch goes through): ``OMP_NUM_THREADS`` = the CPUs this
  process may use (affinity and the cgroup's CPU quota, not the machine's total), and a short
  ``GOMP_SPINCOUNT`` (:data:`SPIN_COUNT`), long enough to bridge the gap between two operators
  of a step on an idle machine, short enough that a waiting thread gives its core away.
* **While generating** (:func:`choose_threads`, applied by ``sdstudio.engine.threads``): the
  number of threads follows the load that other processes put on those CPUs, measured between
  steps, so a thread is not scheduled onto a core another program already uses.
* **Per UNet call** (``sdstudio.engine.threads.BatchParallel``): the rows of a batch
  (classifier-free guidance makes two of every image) run side by side, one slice per CPU,
  meeting once per step instead of at a barrier after every operator.

A person's own ``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins over these
defaults, and so does the "CPU threads" setting (``EngineSettings.cpu_threads``: a fixed
number, which also turns the adaptation off). ``SDSTUDIO_THREAD_TUNING=0`` leaves the
environment as it is (for benchmarks of the untuned behaviour).

Pure Python: no Qt, no torch.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

# libgomp spin iterations before a waiting thread sleeps (a ``pause`` each: ~10-70 cycles).
# On the 2-core development machine, demo model, 512x512 (docs/benchmarks.md): idle, 1,000 to
# 30,000 were all as fast as the default 300,000 (PASSIVE, i.e. 0, was 25 % slower); beside a
# busy process, two threads took 6.2 s per image at 1,000, 10.3 s at 10,000 and ~28 s at the
# default, but with the batch slices and the governor's one thread there the spin no longer
# decides much (4.4 s): 10,000 keeps the idle speed with margin.
SPIN_COUNT = 10000

MAX_CPU_THREADS = 256  # the "CPU threads" setting's upper bound
USER_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
OFF_VARIABLE = "SDSTUDIO_THREAD_TUNING"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"),
                     self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (2.5 = 250 ms per 100 ms), or None when
    there is none. cgroup v2 ``cpu.max`` ("max 100000" or "250000 100000") and v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, in the process's own cgroup and its parents."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    places: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        base = root if not controllers else None
        if controllers and "cpu" in controllers.split(","):
            for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
                if (root / name).is_dir():
                    base = root / name
                    break
        if base is None:
            continue
        here = base / rel if rel else base
        while True:  # the process's cgroup, then each parent up to the root
            places.append(here)
            if here == base or base not in here.parents:
                break
            here = here.parent
    places.append(root)
    limits: list[float] = []
    for place in places:
        limit = _read_quota(place)
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def _read_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((folder / "cpu.cfs_quota_us").read_text())
        p = int((folder / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def allowed_cpu_ids() -> tuple[int, ...] | None:
    """The CPUs this process may run on (its affinity), None where the platform cannot say."""
    getter: Callable[[int], set[int]] | None = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return None
    try:
        return tuple(sorted(getter(0)))
    except OSError:
        return None


def usable_cpus(affinity: tuple[int, ...] | None = None, quota: float | None = None,
                total: int | None = None) -> int:
    """How many CPUs this process can keep busy: its affinity, capped by the cgroup quota
    (rounded up: a quota of 1.5 CPUs still runs two threads part of the time), at least 1."""
    count = len(affinity) if affinity else (total or os.cpu_count() or 1)
    if quota is not None and quota > 0:
        count = min(count, max(1, math.ceil(quota - 1e-9)))
    return max(1, count)


@dataclass(frozen=True)
class ThreadSetup:
    """What :func:`configure_process` decided: the CPUs, the variables it set and those the
    person had set (which it left alone)."""

    cpus: int
    cpu_ids: tuple[int, ...] | None
    set_vars: Mapping[str, str] = field(default_factory=dict)
    user_vars: Mapping[str, str] = field(default_factory=dict)
    tuned: bool = True

    @property
    def adaptive(self) -> bool:
        """Whether the thread count may follow the load (not when the person fixed it)."""
        return self.tuned and "OMP_NUM_THREADS" not in self.user_vars

    def describe(self) -> str:
        parts = [f"{self.cpus} CPU{'s' if self.cpus != 1 else ''} usable"]
        parts += [f"{k}={v}" for k, v in self.set_vars.items()]
        parts += [f"{k}={v} (yours)" for k, v in self.user_vars.items()]
        if not self.tuned:
            parts.append(f"{OFF_VARIABLE}=0: not tuned")
        return ", ".join(parts)


def thread_environment(environ: Mapping[str, str], cpus: int,
                       platform: str = sys.platform) -> dict[str, str]:
    """The variables to set before torch is imported: only those the person has not set."""
    out: dict[str, str] = {}
    if "OMP_NUM_THREADS" not in environ:
        out["OMP_NUM_THREADS"] = str(cpus)
    # GNU OpenMP is the runtime of torch's Linux builds; the spin count is read once, when it
    # loads. Other platforms' runtimes (Intel/LLVM OpenMP) are left at their defaults.
    if platform.startswith("linux") and not any(
            v in environ for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        out["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return out


_SETUP: ThreadSetup | None = None


def configure_process(environ: MutableMapping[str, str] | None = None) -> ThreadSetup:
    """Set the thread variables for this process (once; later calls return the first
    decision). Must run before torch is imported to have an effect."""
    global _SETUP
    if _SETUP is not None:
        return _SETUP
    env = os.environ if environ is None else environ
    ids = allowed_cpu_ids()
    cpus = usable_cpus(ids, cgroup_cpu_limit())
    user = {k: env[k] for k in USER_VARIABLES if k in env}
    tuned = env.get(OFF_VARIABLE, "1").strip() not in ("0", "off", "no", "false")
    chosen = thread_environment(env, cpus) if tuned else {}
    env.update(chosen)
    _SETUP = ThreadSetup(cpus, ids, chosen, user, tuned)
    return _SETUP


def current_setup() -> ThreadSetup | None:
    return _SETUP


# ------------------------------------------------------------------------- while running
# Another process's load (in CPUs) at which one thread gives way, and below which it comes
# back: a browser tab ticking over (~0.1-0.3 CPUs) is not worth a thread; a program that
# keeps a core busy is (beside two of ours on two cores it gets ~0.67 of a CPU).
GIVE_WAY = 0.5
TAKE_BACK = 0.3


def choose_threads(cpus: int, other_load: float, current: int) -> int:
    """The thread count for the next steps: the usable CPUs minus those other processes keep
    busy, at least one. Hysteresis: a thread goes when another program's load reaches
    ``GIVE_WAY`` CPUs and comes back only when it is under ``TAKE_BACK``, so a load near the
    threshold does not flip it every step."""
    cpus = max(1, cpus)
    other = max(0.0, other_load)
    fewer = cpus - math.floor(other + 1 - GIVE_WAY)
    if fewer < current:
        return max(1, fewer)
    more = cpus - math.floor(other + 1 - TAKE_BACK)
    return max(1, min(cpus, max(current, more)))
