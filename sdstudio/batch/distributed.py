"""Splitting a batch between processes (one per GPU, or several machines).

``accelerate launch --multi_gpu --num_processes N -m sdstudio batch LIST ...`` (or
``torchrun --nproc_per_node N -m sdstudio batch ...``) starts N processes. On a machine
without CUDA the same command runs N CPU processes joined by gloo. (``accelerate launch --cpu``
starts only ONE process unless an MPI hostfile is given, so it splits nothing.)

Each process builds the same plan; the main process decides the run (writes the manifest
header, removes stale temp files, adopts images a crash left without a record) inside
``main_process_first``; then every process reads the manifest, all wait at a barrier, and the
units still to do are split with ``PartialState().split_between_processes``. Each process
appends to its own ``manifest.rank<k>.jsonl`` (see storage/manifest.py), so no file has two
writers.

accelerate (and so torch) is imported only when the process was started by a distributed
launcher, through ``sdstudio.engine.distributed`` (the only package that imports torch & co.);
a plain ``sdstudio batch`` uses ``Single``, which needs neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Processes(Protocol):
    rank: int
    world: int
    device: str

    @property
    def is_main(self) -> bool: ...

    def main_process_first(self) -> contextlib.AbstractContextManager[None]: ...

    def wait_for_everyone(self) -> None: ...

    def split(self, items: Sequence[T]) -> list[T]: ...


class Single:
    """One process: no barriers, everything is ours."""

    rank = 0
    world = 1
    device = ""

    @property
    def is_main(self) -> bool:
        return True

    @contextlib.contextmanager
    def main_process_first(self) -> Iterator[None]:
        yield

    def wait_for_everyone(self) -> None:
        return None

    def split(self, items: Sequence[T]) -> list[T]:
        return list(items)


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_distributed() -> bool:
    """True when a distributed launcher (accelerate launch, torchrun) started this process
    as one of several."""
    return _world_size() > 1


def group_id() -> str:
    """Names this process's group in a multi-process run ("" for one process): the launcher's
    run id and the main process's address and port, the same in every process of one launch
    and different for another launch running at the same time (its port is taken). The batch
    lock's info carries it, so that only this group's processes join rank 0's lock."""
    if not launched_distributed():
        return ""
    env = os.environ
    return ":".join(env.get(name, "") for name in
                    ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))


def detect_processes() -> Processes:
    if not launched_distributed():
        return Single()
    # accelerate imports torch: that side lives in the engine package (import boundary)
    from sdstudio.engine.distributed import AccelerateProcesses

    return AccelerateProcesses(expected_world=_world_size())
