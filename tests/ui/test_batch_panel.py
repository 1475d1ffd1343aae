"""The batch panel driven with pytest-qt (offscreen): batches run as jobs of a JobQueue whose
worker thread owns a fake engine (the window's real wiring is tested in test_main_window)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from sdstudio.batch.qt import BatchController
from sdstudio.core.errors import OutOfMemoryError
from sdstudio.core.request import GenerationRequest
from sdstudio.ui.batch_panel import BatchPanel, create_panel
from sdstudio.worker import JobQueue, JobState
from tests.batch.fakes import FakeEngine

DEFAULTS = GenerationRequest(prompt="", width=64, height=64, steps=2, seed=10)


@pytest.fixture
def queues() -> Iterator[list[JobQueue]]:
    made: list[JobQueue] = []
    yield made
    for queue in made:
        assert queue.shutdown(5000)


@pytest.fixture
def make_panel(qtbot: Any, tmp_path: Path, queues: list[JobQueue]) -> Any:
    def make(engine: FakeEngine | None = None, ask: Any = None,
             queue: JobQueue | None = None) -> tuple[BatchPanel, list[str]]:
        fake = engine or FakeEngine()
        if queue is None:
            queue = JobQueue(engine_factory=lambda settings: fake)  # type: ignore[arg-type,return-value]
            queues.append(queue)
            queue.start()
        return _panel(qtbot, tmp_path, BatchController(queue), ask)

    return make


def _panel(qtbot: Any, tmp_path: Path, controller: BatchController,
           ask: Any) -> tuple[BatchPanel, list[str]]:
    saved: list[str] = []
    panel = BatchPanel(controller=controller, defaults=lambda: DEFAULTS,
                       output_dir=tmp_path / "out", on_image=saved.append, ask=ask)
    qtbot.addWidget(panel)
    panel.show()
    return panel, saved


def wait_idle(qtbot: Any, panel: BatchPanel) -> None:
    qtbot.waitUntil(lambda: panel.summary is not None and not panel.controller.running,
                    timeout=10_000)
    panel.shutdown()


def test_run_a_file_with_a_failing_item(qtbot: Any, tmp_path: Path, make_panel: Any) -> None:
    path = tmp_path / "night.txt"
    path.write_text("a cat\n# comment\n--prompt 'a big dog' --n_iter 2\nfails\nlast\n")

    def fail(request: GenerationRequest) -> BaseException | None:
        return OutOfMemoryError("out of memory: lower the size") if request.prompt == "fails" \
            else None

    panel, saved = make_panel(FakeEngine(fail))
    assert panel.open_list(path)
    assert panel.table.rowCount() == 4
    assert panel.table.item(1, 1).text() == "a big dog"
    assert [s for _, s, _ in panel.item_states()] == ["pending"] * 4
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, panel)
    assert panel.item_states() == [
        (1, "done", ""), (3, "done", ""), (4, "failed", "out of memory: lower the size"),
        (5, "done", "")]
    assert panel.table.item(1, 2).text() == "2/2"
    assert panel.table.item(2, 3).text().startswith("failed: out of memory")
    assert len(saved) == 4 and all(Path(p).is_file() for p in saved)
    assert Path(saved[0]).parent == tmp_path / "out" / "batch-night"
    assert panel.progress.value() == panel.progress.maximum() == 5
    assert "s/image" in panel.status.text() or "failed" in panel.status.text()
    assert panel.summary is not None and (panel.summary.done, panel.summary.failed) == (4, 1)
    assert panel.start_button.isEnabled() and not panel.pause_button.isEnabled()
    # the queue showed the batch as one job, done with its images
    (job,) = panel.controller.queue.jobs()
    assert job.is_task and job.source == "batch" and job.state is JobState.DONE
    assert job.title == "Batch: night.txt" and job.images == saved
    assert job.summary.startswith("done · 4 images") and "1 failed" in job.summary


def test_bad_lines_listed_then_run_the_good_ones(qtbot: Any, make_panel: Any) -> None:
    panel, saved = make_panel()
    assert not panel.set_text("good one\n--prompt x --steps 0\n--prompt y --colour red\nok\n")
    rows = [panel.bad_lines.item(i).text() for i in range(panel.bad_lines.count())]
    assert rows[0].startswith("line 2:") and rows[1].startswith("line 3: unknown option")
    assert panel.good_button.isVisible()
    assert not panel.start()  # refused: the person chooses
    assert not panel.controller.running
    qtbot.mouseClick(panel.good_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, panel)
    assert [line for line, state, _ in panel.item_states() if state == "done"] == [1, 4]
    assert len(saved) == 2


def test_pause_after_the_current_image_resume_and_cancel(qtbot: Any, tmp_path: Path,
                                                         make_panel: Any) -> None:
    gate = threading.Event()
    release = threading.Event()

    def on_call(request: GenerationRequest) -> None:
        if request.prompt == "p1":
            gate.set()
            release.wait(5)

    panel, saved = make_panel(FakeEngine(on_call=on_call))
    panel.set_text("p0\np1\np2\np3\n")
    assert panel.start()
    assert gate.wait(5)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)  # while p1 is running
    release.set()
    qtbot.waitUntil(lambda: panel.status.text() == "Paused", timeout=5000)
    assert panel.pause_button.text() == "Resume"
    assert len(saved) == 2  # p1 was finished, nothing after it
    queue = panel.controller.queue
    qtbot.waitUntil(lambda: "paused" in queue.jobs()[0].summary, timeout=5000)
    assert queue.jobs()[0].state is JobState.RUNNING
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, panel)
    assert len(saved) == 4

    # cancel: a second batch into another folder, cancelled while paused
    panel.out_edit.setText(str(tmp_path / "second"))
    gate.clear()
    release.clear()
    assert panel.start()
    assert gate.wait(5)
    panel.toggle_pause()
    release.set()
    qtbot.waitUntil(lambda: panel.status.text() == "Paused", timeout=5000)
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, panel)
    assert panel.summary is not None and panel.summary.cancelled
    assert panel.summary.done == 2 and panel.summary.not_run == 2


@pytest.mark.parametrize("choice", ["resume", "restart", None])
def test_changed_list_asks_resume_or_restart(qtbot: Any, tmp_path: Path, make_panel: Any,
                                             choice: str | None) -> None:
    asked: list[str] = []
    engine = FakeEngine()

    def ask(message: str) -> str | None:
        asked.append(message)
        return choice

    panel, _saved = make_panel(engine, ask=ask)
    panel.set_text("one\ntwo\n")
    panel.out_edit.setText(str(tmp_path / "same"))
    assert panel.start()
    wait_idle(qtbot, panel)
    panel.set_text("one\ntwo changed\n")
    panel.summary = None
    engine.calls.clear()
    assert panel.start()
    qtbot.waitUntil(lambda: bool(asked), timeout=5000)
    assert "changed" in asked[0]
    if choice is None:
        qtbot.waitUntil(lambda: not panel.controller.running, timeout=5000)
        panel.shutdown()
        assert engine.calls == [] and "Not started" in panel.status.text()
        return
    wait_idle(qtbot, panel)
    made = [r.prompt for r in engine.calls]
    assert made == (["two changed"] if choice == "resume" else ["one", "two changed"])


def test_create_panel_for_the_app(qtbot: Any, tmp_path: Path) -> None:
    panel = create_panel(window=None, settings=None)
    qtbot.addWidget(panel)
    assert panel.output_dir().name == "batch-pasted"
    assert panel.pattern_edit.text()
    assert not panel.controller.queue.running  # its own queue, started by the first batch
    assert panel.shutdown()


def test_batch_waits_for_a_running_generation_and_cancels_from_the_queue(
        qtbot: Any, tmp_path: Path, make_panel: Any) -> None:
    """A batch and a single generation never run at once: the batch queues behind the job
    before it, shows as one entry, and cancelling that entry cancels the batch."""
    gate = threading.Event()
    release = {"single": threading.Event(), "b1": threading.Event()}

    def on_call(request: GenerationRequest) -> None:
        if request.prompt in release:
            gate.set()
            release[request.prompt].wait(5)

    engine = FakeEngine(on_call=on_call)
    panel, saved = make_panel(engine)
    queue = panel.controller.queue
    single = queue.submit_request(DEFAULTS.replace(prompt="single"), save=False)
    assert gate.wait(5)
    panel.set_text("b0\nb1\nb2\n")
    assert panel.start()
    assert "Queued" in panel.status.text()
    batch = panel.controller.job_id
    assert batch is not None and queue.job(batch).state is JobState.QUEUED  # type: ignore[union-attr]
    assert [r.prompt for r in engine.calls] == ["single"]
    gate.clear()
    release["single"].set()  # the single job ends; the batch starts
    qtbot.waitUntil(lambda: queue.job(single).state is JobState.DONE, timeout=5000)  # type: ignore[union-attr]
    assert gate.wait(5)  # b1 is running
    assert queue.job(batch).state is JobState.RUNNING  # type: ignore[union-attr]
    qtbot.waitUntil(lambda: queue.job(batch).fraction is not None, timeout=5000)  # type: ignore[union-attr]
    assert queue.cancel_running()
    release["b1"].set()
    wait_idle(qtbot, panel)
    assert queue.job(batch).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert panel.summary is not None and panel.summary.cancelled
    assert len(saved) == 1 and [r.prompt for r in engine.calls] == ["single", "b0", "b1"]
    assert panel.start_button.isEnabled()


def test_a_queued_batch_removed_from_the_queue_never_runs(
        qtbot: Any, make_panel: Any) -> None:
    gate = threading.Event()
    release = threading.Event()

    def on_call(request: GenerationRequest) -> None:
        if request.prompt == "single":
            gate.set()
            release.wait(5)

    engine = FakeEngine(on_call=on_call)
    panel, saved = make_panel(engine)
    queue = panel.controller.queue
    queue.submit_request(DEFAULTS.replace(prompt="single"), save=False)
    assert gate.wait(5)
    panel.set_text("b0\nb1\n")
    assert panel.start()
    batch = panel.controller.job_id
    assert batch is not None and queue.remove(batch)
    assert not panel.controller.running and panel.start_button.isEnabled()
    release.set()
    qtbot.waitUntil(lambda: not queue.busy, timeout=5000)
    assert [r.prompt for r in engine.calls] == ["single"] and saved == []


def test_a_folder_another_batch_runs_into_is_refused(qtbot: Any, tmp_path: Path,
                                                     make_panel: Any) -> None:
    """The batch tab refuses at once, naming the running batch; nothing is made."""
    import os

    from sdstudio.storage.manifest import BatchLock, FolderInUseError

    engine = FakeEngine()
    panel, saved = make_panel(engine)
    refusals: list[object] = []
    panel.controller.failed.connect(refusals.append)
    panel.set_text("one\ntwo\n")
    out = tmp_path / "busy"
    panel.out_edit.setText(str(out))
    with BatchLock.acquire(out, "cli"):  # an `sdstudio batch` into the same folder
        assert panel.start()
        qtbot.waitUntil(lambda: bool(refusals) and not panel.controller.running, timeout=10_000)
    assert len(refusals) == 1 and isinstance(refusals[0], FolderInUseError)
    text = panel.status.text()
    assert "is in use by another batch (sdstudio batch on the command line, " in text
    assert f"pid {os.getpid()}" in text and "\n" not in text
    assert panel.status.property("error") is True
    assert engine.calls == [] and saved == [] and not list(out.glob("*.png"))
    (job,) = panel.controller.queue.jobs()
    assert job.state is JobState.FAILED
    assert panel.start_button.isEnabled()
    panel.shutdown()
