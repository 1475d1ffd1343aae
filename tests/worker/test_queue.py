"""JobQueue + EngineWorker against the scriptable fake engine: order, cancel, failures, stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QThread

from sdstudio.core.errors import ModelError
from sdstudio.core.request import GenerationRequest
from sdstudio.testing.fake_engine import FakeEngine, FakeScript, fake_engine_factory
from sdstudio.worker import JobQueue, JobState

REQ = GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=5)


@pytest.fixture
def script() -> FakeScript:
    return FakeScript()


@pytest.fixture
def engines() -> list[FakeEngine]:
    return []


@pytest.fixture
def queue(qtbot, script: FakeScript, engines: list[FakeEngine], tmp_path: Path
          ) -> Iterator[JobQueue]:
    q = JobQueue(engine_factory=fake_engine_factory(script, engines))
    q.set_output(str(tmp_path / "out"), "{index}-{seed}")
    q.start()
    yield q
    assert q.shutdown(3000)


def wait_finished(qtbot, queue: JobQueue, job_id: int, timeout: int = 5000) -> str:
    job = queue.job(job_id)
    assert job is not None
    qtbot.waitUntil(lambda: job.state.finished, timeout=timeout)
    return job.state.value


def test_engine_is_created_in_the_worker_thread(qtbot, queue: JobQueue,
                                                engines: list[FakeEngine]) -> None:
    created_in: list[object] = []

    def factory(settings):  # type: ignore[no-untyped-def]
        created_in.append(QThread.currentThread())
        return FakeEngine(settings)

    q = JobQueue(engine_factory=factory)
    with qtbot.waitSignal(q.engineStarted, timeout=3000):
        q.start()
    assert created_in and created_in[0] is not QThread.currentThread()
    assert q.shutdown(2000)


def test_job_runs_and_reports_progress_preview_and_images(qtbot, queue: JobQueue) -> None:
    progress: list[tuple[int, int]] = []
    images = []
    previews = []
    queue.jobProgress.connect(lambda jid, ev: progress.append((ev.step, ev.total)))
    queue.imageReady.connect(lambda jid, img: images.append(img))
    queue.jobPreview.connect(lambda jid, q: previews.append(q))
    with qtbot.waitSignal(queue.jobFinished, timeout=5000) as blocker:
        job_id = queue.submit_request(REQ.replace(batch_size=2))
    assert blocker.args == [job_id, "done"]
    assert progress == [(1, 2), (2, 2)]
    # latest only: a preview the GUI has not taken when the next comes is replaced
    assert 1 <= len(previews) <= 2 and not previews[0].isNull()
    assert [img.index for img in images] == [0, 1]
    assert images[0].qimage is not None and images[0].qimage.width() == 64
    assert images[0].request.seed == 5 and images[1].request.seed == 6


def test_queued_jobs_run_in_order(qtbot, queue: JobQueue, script: FakeScript) -> None:
    script.step_delay = 0.02
    order: list[int] = []
    queue.jobStarted.connect(order.append)
    first = queue.submit_request(REQ.replace(prompt="one"))
    second = queue.submit_request(REQ.replace(prompt="two"))
    assert queue.job(second).state is JobState.QUEUED  # type: ignore[union-attr]
    assert wait_finished(qtbot, queue, second) == "done"
    assert queue.job(first).state is JobState.DONE  # type: ignore[union-attr]
    assert order == [first, second]
    assert queue.rowCount() == 2


def test_cancel_running_and_remove_queued(qtbot, queue: JobQueue, script: FakeScript) -> None:
    script.step_delay = 0.05
    first = queue.submit_request(REQ.replace(steps=200))
    second = queue.submit_request(REQ)
    third = queue.submit_request(REQ)
    qtbot.waitUntil(lambda: queue.job(first).step >= 1, timeout=3000)  # type: ignore[union-attr]
    assert queue.remove(second)
    assert queue.job(second) is None
    assert queue.cancel(first)
    assert wait_finished(qtbot, queue, first) == "cancelled"
    assert wait_finished(qtbot, queue, third) == "done"
    assert queue.job(first).step < 200  # type: ignore[union-attr]


def test_cancel_queued_job_never_runs(qtbot, queue: JobQueue, script: FakeScript) -> None:
    script.step_delay = 0.02
    started: list[int] = []
    queue.jobStarted.connect(started.append)
    first = queue.submit_request(REQ)
    second = queue.submit_request(REQ)
    queue.cancel(second)
    assert wait_finished(qtbot, queue, first) == "done"
    qtbot.wait(50)
    assert second not in started
    assert queue.job(second).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_failure_becomes_a_signal_and_the_worker_keeps_working(
        qtbot, queue: JobQueue, script: FakeScript) -> None:
    failures = []
    queue.jobFailed.connect(lambda jid, f: failures.append(f))
    script.fail_generate = RuntimeError("boom\nsecond line")
    job = queue.submit_request(REQ)
    assert wait_finished(qtbot, queue, job) == "failed"
    assert failures[0].message == "RuntimeError: boom"
    assert "Traceback" in failures[0].details
    job2 = queue.submit_request(REQ)
    assert wait_finished(qtbot, queue, job2) == "done"


def test_invalid_request_fails_with_the_field_message(qtbot, queue: JobQueue) -> None:
    failures = []
    queue.jobFailed.connect(lambda jid, f: failures.append(f))
    job = queue.submit_request(REQ.replace(width=65))
    assert wait_finished(qtbot, queue, job) == "failed"
    assert "multiple of 8" in failures[0].message
    assert failures[0].kind == "RequestError"


def test_model_load_progress_and_corrupt_model(qtbot, queue: JobQueue,
                                               script: FakeScript) -> None:
    progress = []
    queue.loadProgress.connect(progress.append)
    with qtbot.waitSignal(queue.modelReady, timeout=3000) as ready:
        queue.load_model("")
    assert ready.args[0].untrained
    assert progress and progress[-1].fraction == 1.0
    script.fail_models.add("/models/broken")
    with qtbot.waitSignal(queue.modelFailed, timeout=3000) as failed:
        queue.load_model("/models/broken")
    assert isinstance(failed.args[0].message, str) and "damaged" in failed.args[0].message
    assert failed.args[0].kind == ModelError.__name__
    job = queue.submit_request(REQ)
    assert wait_finished(qtbot, queue, job) == "done"


def test_engine_that_cannot_start_fails_jobs_cleanly(qtbot) -> None:
    def factory(settings):  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'torch'")

    q = JobQueue(engine_factory=factory)
    with qtbot.waitSignal(q.engineFailed, timeout=3000):
        q.start()
    failures = []
    q.jobFailed.connect(lambda jid, f: failures.append(f))
    job = q.submit_request(REQ)
    qtbot.waitUntil(lambda: q.job(job).state.finished, timeout=3000)  # type: ignore[union-attr]
    assert "torch" in failures[0].message
    assert q.shutdown(2000)


def test_shutdown_during_a_job_cancels_it_and_stops_the_thread(
        qtbot, script: FakeScript) -> None:
    script.step_delay = 0.05
    q = JobQueue(engine_factory=fake_engine_factory(script))
    q.start()
    job = q.submit_request(REQ.replace(steps=1000))
    pending = q.submit_request(REQ)
    qtbot.waitUntil(lambda: q.job(job).step >= 1, timeout=3000)  # type: ignore[union-attr]
    assert q.shutdown(2000)
    assert not q.running
    assert q.job(pending).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_saves_images_with_storage(qtbot, queue: JobQueue, tmp_path: Path) -> None:
    pytest.importorskip("sdstudio.storage.png")
    images = []
    queue.imageReady.connect(lambda jid, img: images.append(img))
    job = queue.submit_request(REQ)
    assert wait_finished(qtbot, queue, job) == "done"
    assert images[0].save_error is None, images[0].save_error
    path = Path(images[0].path)
    assert path.is_file() and path.parent == tmp_path / "out"
    assert queue.job(job).images == [str(path)]  # type: ignore[union-attr]


def test_exclusive_task_runs_in_order_on_the_workers_engine(
        qtbot, queue: JobQueue, script: FakeScript, engines: list[FakeEngine]) -> None:
    """A task (a batch, say) uses the worker's one engine, in the worker thread, between the
    jobs queued before and after it; it reports items, images and engine events."""
    script.step_delay = 0.01
    order: list[str] = []
    seen: list[object] = []
    progress: list[tuple[int, int, str]] = []
    queue.jobStarted.connect(lambda jid: order.append(f"start {jid}"))
    queue.taskProgress.connect(lambda jid, done, total, text: progress.append((done, total,
                                                                               text)))

    def task(ctx) -> None:  # type: ignore[no-untyped-def]
        seen.extend([ctx.engine, QThread.currentThread()])
        for i in range(3):
            ctx.engine.generate(REQ.replace(prompt=f"item {i}"), ctx.engine_event, ctx.cancel)
            ctx.image_saved(f"/out/{i}.png")
            ctx.report(i + 1, 3, f"{i + 1}/3 images")

    first = queue.submit_request(REQ)
    tid = queue.run_exclusive(task, label="Batch: list.txt", source="batch")
    last = queue.submit_request(REQ)
    job = queue.job(tid)
    assert job is not None and job.is_task and job.summary.startswith("queued")
    assert wait_finished(qtbot, queue, last) == "done"
    assert job.state is JobState.DONE
    assert order == [f"start {first}", f"start {tid}", f"start {last}"]
    assert queue.job(first).ended <= job.started  # type: ignore[union-attr,operator]
    assert job.ended <= queue.job(last).started  # type: ignore[union-attr,operator]
    assert len(engines) == 1 and seen[0] is engines[0]
    assert seen[1] is not QThread.currentThread()
    assert progress[-1] == (3, 3, "3/3 images") and job.images == [f"/out/{i}.png"
                                                                    for i in range(3)]
    assert job.summary.startswith("done · 3 images")


def test_exclusive_task_cancel_failure_and_queued_removal(qtbot, queue: JobQueue,
                                                          script: FakeScript) -> None:
    script.step_delay = 0.02
    cancelled: list[str] = []
    finished: list[tuple[int, str]] = []
    failures = []
    queue.jobFinished.connect(lambda jid, state: finished.append((jid, state)))
    queue.jobFailed.connect(lambda jid, f: failures.append(f))

    def endless(ctx) -> None:  # type: ignore[no-untyped-def]
        while True:
            ctx.engine.generate(REQ, ctx.engine_event, ctx.cancel)

    def broken(ctx) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("the list vanished")

    running = queue.run_exclusive(endless, label="endless",
                                  on_cancel=lambda: cancelled.append("running"))
    queued = queue.run_exclusive(endless, label="never",
                                 on_cancel=lambda: cancelled.append("queued"))
    failing = queue.run_exclusive(broken, label="broken")
    qtbot.waitUntil(lambda: queue.job(running).step >= 1, timeout=3000)  # type: ignore[union-attr]
    assert queue.job(running).fraction is None  # type: ignore[union-attr]  # no items yet
    assert queue.remove(queued)
    assert (queued, "cancelled") in finished and cancelled == ["queued"]
    assert queue.cancel(running)
    assert wait_finished(qtbot, queue, running) == "cancelled"
    assert cancelled == ["queued", "running"]
    assert wait_finished(qtbot, queue, failing) == "failed"
    assert failures[0].message == "RuntimeError: the list vanished"
    job = queue.submit_request(REQ)
    assert wait_finished(qtbot, queue, job) == "done"
