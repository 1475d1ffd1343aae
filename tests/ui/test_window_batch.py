"""The batch tab inside the real window, and the VRAM figure in the status bar.

The batch runs on the window's worker thread with the worker's engine: one model load for
single images and batches together (the engine counts its loads here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import Qt

from sdstudio.core.events import GIB, VramUsage
from sdstudio.core.settings import EngineSettings
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.batch_panel import BatchPanel
from sdstudio.ui.main_window import MainWindow
from sdstudio.worker import JobState

LOAD_TIMEOUT = 120_000  # the first test of a run imports torch in the worker thread
RUN_TIMEOUT = 60_000


def counting_engine_factory(engines: list[Any]) -> Any:
    """The real engine, counting its model loads (created in the worker thread)."""

    def factory(settings: EngineSettings) -> Any:
        from sdstudio.engine import Engine

        class CountingEngine(Engine):
            loads = 0

            def load(self, *args: Any, **kwargs: Any) -> Any:
                self.loads += 1
                return super().load(*args, **kwargs)

        engine = CountingEngine(settings)
        engines.append(engine)
        return engine

    return factory


def add_batch_tab(w: MainWindow) -> BatchPanel:
    from sdstudio.app import _add_optional_panels

    _add_optional_panels(w, w.queue)  # the app's own wiring
    panels = [w.tabs.widget(i) for i in range(w.tabs.count())
              if isinstance(w.tabs.widget(i), BatchPanel)]
    assert len(panels) == 1, "the batch tab was not added"
    return panels[0]


def test_batch_tab_runs_on_the_windows_engine(qtbot: Any, make_window: Any, tiny_model: Path,
                                              tmp_path: Path) -> None:
    engines: list[Any] = []
    w = make_window(model=str(tiny_model), factory=counting_engine_factory(engines))
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=LOAD_TIMEOUT)
    assert w.current_model == str(tiny_model)
    panel = add_batch_tab(w)
    w.tabs.setCurrentWidget(panel)
    p = w.prompt_panel
    p.set_size(64, 64)
    p.widget("steps").setValue(2)
    p.widget("sampler").setCurrentText("Euler")
    assert panel.set_text("a red fox\na blue bird\na green frog\n")
    running_fractions: list[float] = []

    def watch(*_: object) -> None:
        job = w.queue.running_job
        if job is not None and job.is_task and job.fraction is not None:
            running_fractions.append(job.fraction)

    w.queue.dataChanged.connect(watch)
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.summary is not None and not panel.controller.running,
                    timeout=RUN_TIMEOUT)
    summary = panel.summary
    assert summary is not None and (summary.done, summary.failed) == (3, 0), \
        panel.status.text()
    # one job in the queue for the whole batch, with its progress while it ran
    (job,) = w.queue.jobs()
    assert job.is_task and job.state is JobState.DONE and job.title == "Batch: pasted prompts"
    assert running_fractions and max(running_fractions) > 0.5
    assert job.summary.startswith("done · 3 images")
    # images on disk, with their prompts, and in the gallery
    out = tmp_path / "out" / "batch-pasted"
    files = sorted(out.glob("*.png"))
    assert len(files) == 3 and set(map(Path, job.images)) == set(files)
    prompts = set()
    for f in files:
        with Image.open(f) as im:
            assert im.size == (64, 64)
            prompts.add(im.info["parameters"].splitlines()[0])
    assert prompts == {"a red fox", "a blue bird", "a green frog"}
    qtbot.waitUntil(lambda: set(map(Path, w.gallery.paths())) >= set(files), timeout=5000)
    # one engine, one model load: the batch used the window's loaded model
    assert len(engines) == 1 and engines[0].loads == 1
    assert w.progress_bar.format().startswith("Done: 3 images")


def test_vram_shown_in_the_status_bar(qtbot: Any, make_window: Any) -> None:
    script = FakeScript(vram=lambda step: VramUsage(
        allocated=int((2.0 + step / 10) * GIB), reserved=int(3 * GIB), peak=int(3.5 * GIB),
        total=8 * GIB))
    w = make_window(fake=script)
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=5000)
    assert w.vram_label.isVisibleTo(w) and w.vram_label.text() == "VRAM 2.0 / 8.0 GiB"
    assert "reserved 3.00 GiB" in w.vram_label.toolTip()
    w.prompt_panel.prompt_edit.setPlainText("a cat")
    w.prompt_panel.set_size(64, 64)
    w.prompt_panel.widget("steps").setValue(12)
    w.generate()
    qtbot.waitUntil(lambda: w.vram_label.text() == "VRAM 3.2 / 8.0 GiB", timeout=5000)


def test_no_vram_label_off_the_gpu(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=5000)
    assert not w.vram_label.isVisibleTo(w)


def test_batch_tab_refuses_a_folder_a_cli_batch_runs_into(qtbot: Any, make_window: Any,
                                                          tmp_path: Path) -> None:
    """A `sdstudio batch` holds the folder: the window's batch is refused with its one line
    (pid, host, start), the job fails, nothing is made; once it ends the tab's batch runs."""
    import os
    import socket

    from sdstudio.storage.manifest import BatchLock

    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=5000)
    panel = add_batch_tab(w)
    w.prompt_panel.set_size(64, 64)
    assert panel.set_text("a red fox\na blue bird\n")
    out = tmp_path / "out" / "batch-pasted"
    with BatchLock.acquire(out, "cli"):
        qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not panel.controller.running
                        and "in use" in panel.status.text(), timeout=RUN_TIMEOUT)
    text = panel.status.text()
    assert "sdstudio batch on the command line" in text and "\n" not in text
    assert f"pid {os.getpid()} on {socket.gethostname()}, started " in text
    (job,) = w.queue.jobs()
    assert job.state is JobState.FAILED and not list(out.glob("*.png"))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)  # the folder is free now
    qtbot.waitUntil(lambda: panel.summary is not None and not panel.controller.running,
                    timeout=RUN_TIMEOUT)
    assert panel.summary.done == 2 and len(list(out.glob("*.png"))) == 2
