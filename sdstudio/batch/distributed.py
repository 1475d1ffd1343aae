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
launcher; a plain ``sdstudio batch`` uses ``Single``, which needs neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

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


class AccelerateProcesses:
    """Backed by ``accelerate.PartialState`` (started by ``accelerate launch``)."""

    def __init__(self, state: Any | None = None) -> None:
        if state is None:
            from accelerate import PartialState

            # Without CUDA, accelerate only sets up a process group when told to use the CPU
            # (gloo); otherwise every process would believe it is alone and make every image.
            state = PartialState(cpu=not _cuda_available())
            expected = _world_size()
            if int(state.num_processes) != expected:
                from sdstudio.core.errors import SDStudioError

                raise SDStudioError(
                    f"started as {expected} processes but accelerate set up "
                    f"{state.num_processes}; refusing to run every image in every process"
                )
        self._state = state
        self.rank = int(state.process_index)
        self.world = int(state.num_processes)
        self.device = str(state.device)

    @property
    def is_main(self) -> bool:
        return bool(self._state.is_main_process)

    def main_process_first(self) -> contextlib.AbstractContextManager[None]:
        return self._state.main_process_first()  # type: ignore[no-any-return]

    def wait_for_everyone(self) -> None:
        self._state.wait_for_everyone()

    def split(self, items: Sequence[T]) -> list[T]:
        with self._state.split_between_processes(list(items)) as mine:
            return list(mine)


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _cuda_available() -> bool:
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def launched_distributed() -> bool:
    """True when a distributed launcher (accelerate launch, torchrun) started this process
    as one of several."""
    return _world_size() > 1


def detect_processes() -> Processes:
    return AccelerateProcesses() if launched_distributed() else Single()
