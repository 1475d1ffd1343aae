"""The live preview's hand-over: a latest-only slot, previews rendered once by the worker at
the view's size, at most MIN_PREVIEW_INTERVAL_S apart, none shown after the result; the view
paints them with a plain copy."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QImage

from sdstudio.core.request import GenerationRequest
from sdstudio.testing.fake_engine import FakeScript, fake_engine_factory
from sdstudio.worker import JobQueue
from sdstudio.worker import queue as queue_module
from sdstudio.worker.previews import PreviewSlot, fit_size, render_preview


def latent_image(w: int = 8, h: int = 8, colour: tuple[int, int, int] = (200, 40, 10)
                 ) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def test_slot_keeps_only_the_latest() -> None:
    slot = PreviewSlot()
    assert slot.take() is None
    assert slot.put(1, 1, latent_image()) is True  # empty: tell the GUI
    assert slot.put(1, 2, latent_image()) is False  # still waiting: replaced, no new signal
    assert slot.put(1, 3, latent_image()) is False
    item = slot.take()
    assert item is not None and item.step == 3 and item.job_id == 1
    assert slot.take() is None
    assert (slot.made, slot.dropped) == (3, 2)
    assert slot.put(1, 4, latent_image()) is True


def test_previews_too_soon_after_a_take_are_skipped_unrendered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sdstudio.worker import previews

    now = [100.0]
    monkeypatch.setattr(previews.time, "monotonic", lambda: now[0])
    rendered: list[int] = []
    real = previews.render_preview
    monkeypatch.setattr(previews, "render_preview",
                        lambda *a, **k: (rendered.append(1), real(*a, **k))[1])
    slot = PreviewSlot(interval=0.1)
    assert slot.put(1, 1, latent_image()) is True  # nothing taken yet
    assert slot.take() is not None
    now[0] += 0.05
    assert slot.put(1, 2, latent_image()) is False and slot.take() is None  # skipped
    now[0] += 0.06  # the interval is over: the next one is rendered and shown
    assert slot.put(1, 3, latent_image()) is True
    assert slot.put(1, 4, latent_image()) is False  # not taken yet: replaced, as before
    item = slot.take()
    assert item is not None and item.step == 4
    assert (slot.made, slot.dropped, slot.skipped, len(rendered)) == (3, 1, 1, 3)


def test_clear_drops_only_that_jobs_preview() -> None:
    slot = PreviewSlot()
    slot.put(1, 1, latent_image())
    slot.clear(2)
    assert slot.take() is not None
    slot.put(3, 1, latent_image())
    slot.clear(3)
    assert slot.take() is None


def test_rendered_once_to_fit_the_views_box() -> None:
    slot = PreviewSlot()
    slot.set_box(QSize(900, 600), 1.0)
    slot.put(1, 1, latent_image(16, 8))
    item = slot.take()
    assert item is not None
    assert item.image.size() == QSize(900, 450) and item.size == QSize(16, 8)
    assert item.image.format() == QImage.Format.Format_RGB32  # blitted as it is
    assert QColor(item.image.pixel(450, 225)).getRgb()[:3] == (200, 40, 10)
    # HiDPI: device pixels, drawn at the logical size
    image = render_preview(latent_image(), QSize(400, 400), 2.0)
    assert image.size() == QSize(400, 400) and image.devicePixelRatio() == 2.0
    # no box (no window): the engine's size
    assert render_preview(latent_image(), QSize()).size() == QSize(8, 8)
    assert fit_size(QSize(8, 8), QSize(0, 0)) == QSize(8, 8)


@pytest.fixture
def slow_queue(qtbot: Any, tmp_path: Path) -> Iterator[tuple[JobQueue, FakeScript]]:
    script = FakeScript()
    q = JobQueue(engine_factory=fake_engine_factory(script))
    q.set_output(str(tmp_path / "out"), "{index}-{seed}")
    q.start()
    yield q, script
    assert q.shutdown(3000)


def test_previews_at_most_every_interval_and_none_after_the_result(
        qtbot: Any, slow_queue: tuple[JobQueue, FakeScript]) -> None:
    queue, script = slow_queue
    script.step_delay = 0.01  # 100 steps a second: faster than previews are shown
    shown: list[tuple[float, int]] = []
    order: list[str] = []
    queue.previews.set_box(QSize(300, 300))
    queue.jobPreview.connect(lambda jid, image: (shown.append((time.monotonic(),
                                                              image.width())),
                                                 order.append("preview")))
    queue.imageReady.connect(lambda *a: order.append("image"))
    with qtbot.waitSignal(queue.jobFinished, timeout=10000):
        queue.submit_request(GenerationRequest(prompt="a cat", width=64, height=64, steps=40,
                                               seed=1))
    qtbot.wait(int(queue_module.MIN_PREVIEW_INTERVAL_S * 3000))  # a late timer would fire
    assert 2 <= len(shown) < 40
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(shown)]
    assert min(gaps) >= queue_module.MIN_PREVIEW_INTERVAL_S * 0.9
    assert {w for _, w in shown} == {300}  # rendered for the box, by the worker
    assert order[-1] == "image" and "preview" not in order[order.index("image"):]
    slot = queue.previews
    assert slot.made + slot.skipped == 40  # every step's preview offered
    assert slot.skipped > 0 and slot.made < 40  # too soon after a take: never rendered


def test_a_running_jobs_row_repaints_at_most_every_interval_and_ends_on_the_last_step(
        qtbot: Any, slow_queue: tuple[JobQueue, FakeScript]) -> None:
    """Progress repaints the job's row at most every ROW_PROGRESS_INTERVAL_S (the GUI
    thread's work per step delays the worker); the row still shows the last step."""
    queue, script = slow_queue
    script.step_delay = 0.01
    changed: list[tuple[float, int]] = []
    progress: list[int] = []
    queue.dataChanged.connect(lambda first, last: changed.append((time.monotonic(),
                                                                  first.row())))
    queue.jobProgress.connect(lambda jid, event: progress.append(event.step))
    with qtbot.waitSignal(queue.jobFinished, timeout=10000):
        job_id = queue.submit_request(GenerationRequest(prompt="a cat", width=64, height=64,
                                                        steps=40, seed=1))
    qtbot.wait(int(queue_module.ROW_PROGRESS_INTERVAL_S * 2000))
    assert len(progress) == 40  # every step still reaches the progress bar
    assert len(changed) < 20  # not one repaint per step
    job = queue.job(job_id)
    assert job is not None and job.step == 40
    # a change waiting at the end is flushed: nothing is left pending
    assert not queue._rows_waiting and not queue._row_timer.isActive()


def test_no_row_repaint_is_left_pending_after_shutdown(qtbot: Any, tmp_path: Path) -> None:
    """A row change still waiting when the queue shuts down is dropped with its timer (the
    views it would repaint may be gone: a later event loop pass crashed in the suite)."""
    script = FakeScript(step_delay=0.01)
    q = JobQueue(engine_factory=fake_engine_factory(script))
    q.set_output(str(tmp_path / "out"), "{index}-{seed}")
    q.start()
    with qtbot.waitSignal(q.jobFinished, timeout=10000):
        q.submit_request(GenerationRequest(prompt="a cat", width=64, height=64, steps=30,
                                           seed=1))
    assert q.shutdown(3000)
    assert not q._row_timer.isActive() and not q._rows_waiting
