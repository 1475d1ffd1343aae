"""The process-splitting side of a multi-process batch (``sdstudio.batch.distributed``): the
``Processes`` implementation backed by accelerate, which imports torch and so lives here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class AccelerateProcesses:
    """Backed by ``accelerate.PartialState`` (started by ``accelerate launch``)."""

    def __init__(self, state: Any | None = None, expected_world: int = 1) -> None:
        if state is None:
            from accelerate import PartialState

            # Without CUDA, accelerate only sets up a process group when told to use the CPU
            # (gloo); otherwise every process would believe it is alone and make every image.
            state = PartialState(cpu=not _cuda_available())
            expected = expected_world
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
        return self._state.main_process_first()

    def wait_for_everyone(self) -> None:
        self._state.wait_for_everyone()

    def split(self, items: Sequence[T]) -> list[T]:
        with self._state.split_between_processes(list(items)) as mine:
            return list(mine)


def _cuda_available() -> bool:
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return False
    return bool(torch.cuda.is_available())
