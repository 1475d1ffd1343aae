"""Worker test fixtures: a guard that fails any test leaving the worker's QThread running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_running_worker_threads() -> Iterator[None]:
    from sdstudio.worker import running_threads

    yield
    alive = running_threads()
    for thread in alive:  # stop them so later tests are not affected, then fail
        thread.quit()
        thread.wait(2000)
    assert not alive, f"test left {len(alive)} worker QThread(s) running"
