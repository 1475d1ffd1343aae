"""Nothing in the window keeps saying what is no longer true (issue 11, defect 5): a load
error goes when a model loads; no demo badge without a model; "Restored from…" stays on its
tab; a cancelled job's blocky preview goes; the gallery shows the newest image; the status
bar says "Generating…" during a job; a resumed batch counts its earlier images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QColor, QImage

from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_TXT2IMG
from sdstudio.ui.window_status import GENERATING


def _wait_loaded(qtbot: Any, w: Any) -> None:
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)


def test_a_load_error_and_the_demo_badge_follow_the_model(qtbot: Any, make_window: Any,
                                                          tmp_path: Path) -> None:
    script = FakeScript(fail_models={"broken"})
    w = make_window(fake=script)
    _wait_loaded(qtbot, w)
    assert w.demo_badge.isVisible()
    w.select_model("broken")
    qtbot.waitUntil(lambda: w.load_label.text() == "No model loaded", timeout=10_000)
    assert w.message_bar.kind == "error" and w.message_bar.isVisible()
    assert not w.demo_badge.isVisible()  # no model: no demo either
    w.select_model("")  # back to the demo model: the old load error goes when it loads
    qtbot.waitUntil(lambda: not w.message_bar.isVisible(), timeout=10_000)
    assert w.demo_badge.isVisible() and w.queue.loaded is not None
    w.show_error("something else failed")
    w.select_model("")
    qtbot.wait(50)
    assert w.message_bar.isVisible()  # other errors stay until dismissed


def test_restored_message_stays_on_its_tab(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    w.message_bar.show_info("Restored from cat.png: seed 1")
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert not w.message_bar.isVisible()
    w.show_error("disk full")
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    assert w.message_bar.isVisible() and w.message_bar.kind == "error"


def test_cancel_removes_the_preview_and_status_says_generating(qtbot: Any,
                                                               make_window: Any) -> None:
    script = FakeScript(step_delay=0.05)
    w = make_window(fake=script)
    _wait_loaded(qtbot, w)
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a fox")
    p.set_size(64, 64)
    p.widget("steps").setValue(2)
    w.generate()
    qtbot.waitUntil(lambda: w.queue.jobs() and w.queue.jobs()[0].state.finished,
                    timeout=10_000)
    finished = w.txt_viewer.image()
    assert finished is not None and finished.width() == 64
    qtbot.waitUntil(lambda: w.load_label.text() == "Ready", timeout=10_000)

    seen: list[str] = []
    script.step_delay = 0.2
    script.on_step = lambda step: seen.append(w.load_label.text())
    p.widget("steps").setValue(40)
    w.generate()
    qtbot.waitUntil(w.txt_viewer.showing_preview, timeout=10_000)  # the preview
    assert w.load_label.text() == GENERATING
    w.queue.cancel_running()
    qtbot.waitUntil(lambda: all(j.state.finished for j in w.queue.jobs()), timeout=10_000)
    shown = w.txt_viewer.image()
    assert shown is not None and shown.width() == 64  # the last real image, not the preview
    assert not w.txt_viewer.showing_preview()
    assert w.load_label.text() == "Ready"


def test_the_gallery_follows_the_newest_image(qtbot: Any, tmp_path: Path) -> None:
    from sdstudio.ui.gallery import GalleryWidget

    def png(name: str) -> str:
        image = QImage(16, 16, QImage.Format.Format_RGB32)
        image.fill(QColor("red"))
        path = tmp_path / name
        assert image.save(str(path))
        return str(path)

    gallery = GalleryWidget()
    qtbot.addWidget(gallery)
    try:
        gallery.add_image(png("1.png"))
        gallery.add_image(png("2.png"))
        assert gallery.current_path().endswith("2.png")  # the newest, not the first
        gallery.select_path(str(tmp_path / "1.png"))  # the person looks at an older one
        gallery.add_image(png("3.png"))
        assert gallery.current_path().endswith("1.png")  # left where they chose
    finally:
        gallery.shutdown()


def test_a_resumed_batch_counts_its_earlier_images() -> None:
    from sdstudio.batch.events import BatchPlanned
    from sdstudio.batch.qt import _BatchTask

    reports: list[tuple[int, int, str]] = []

    class Ctx:
        def report(self, done: int, total: int, text: str) -> None:
            reports.append((done, total, text))

    task = _BatchTask.__new__(_BatchTask)
    task.assigned = task.finished = task.kept = 0
    task.started = 0.0
    planned = BatchPlanned(run_id="r", total=5, already_done=2, assigned=3, units=(),
                           done_slots=frozenset(), resumed=True, out_dir=Path("."))
    task._report(Ctx(), planned)  # type: ignore[arg-type]
    assert reports[-1][:2] == (2, 5) and reports[-1][2].startswith("2/5 images")


def test_the_batch_bar_shows_seconds_per_image_and_time_left() -> None:
    import time

    from sdstudio.batch.events import BatchPaused
    from sdstudio.batch.qt import _BatchTask

    task = _BatchTask.__new__(_BatchTask)
    task.assigned, task.finished, task.kept = 5, 3, 2
    task.started = time.perf_counter() - 4.0  # one image made in this run, in 4 s
    line = task._line(BatchPaused(paused=False))
    assert line.startswith("3/5 images · 4.0 s/image · ") and line.endswith(" left")
    assert "8 s left" in line
