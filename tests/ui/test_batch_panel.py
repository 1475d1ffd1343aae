"""The batch panel driven with pytest-qt (offscreen), a fake engine behind its controller."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from sdstudio.batch.qt import BatchController
from sdstudio.core.errors import OutOfMemoryError
from sdstudio.core.request import GenerationRequest
from sdstudio.ui.batch_panel import BatchPanel, create_panel
from tests.batch.fakes import FakeEngine

DEFAULTS = GenerationRequest(prompt="", width=64, height=64, steps=2, seed=10)


def make_panel(qtbot: Any, tmp_path: Path, engine: FakeEngine | None = None,
               ask: Any = None) -> tuple[BatchPanel, list[str]]:
    engine = engine or FakeEngine()
    controller = BatchController(lambda: engine)  # type: ignore[arg-type,return-value]
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


def test_run_a_file_with_a_failing_item(qtbot: Any, tmp_path: Path) -> None:
    path = tmp_path / "night.txt"
    path.write_text("a cat\n# comment\n--prompt 'a big dog' --n_iter 2\nfails\nlast\n")

    def fail(request: GenerationRequest) -> BaseException | None:
        return OutOfMemoryError("out of memory: lower the size") if request.prompt == "fails" \
            else None

    panel, saved = make_panel(qtbot, tmp_path, FakeEngine(fail))
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


def test_bad_lines_listed_then_run_the_good_ones(qtbot: Any, tmp_path: Path) -> None:
    panel, saved = make_panel(qtbot, tmp_path)
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


def test_pause_after_the_current_image_resume_and_cancel(qtbot: Any, tmp_path: Path) -> None:
    gate = threading.Event()
    release = threading.Event()

    def on_call(request: GenerationRequest) -> None:
        if request.prompt == "p1":
            gate.set()
            release.wait(5)

    panel, saved = make_panel(qtbot, tmp_path, FakeEngine(on_call=on_call))
    panel.set_text("p0\np1\np2\np3\n")
    assert panel.start()
    assert gate.wait(5)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)  # while p1 is running
    release.set()
    qtbot.waitUntil(lambda: panel.status.text() == "Paused", timeout=5000)
    assert panel.pause_button.text() == "&Resume"
    assert len(saved) == 2  # p1 was finished, nothing after it
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
def test_changed_list_asks_resume_or_restart(qtbot: Any, tmp_path: Path,
                                             choice: str | None) -> None:
    asked: list[str] = []
    engine = FakeEngine()

    def ask(message: str) -> str | None:
        asked.append(message)
        return choice

    panel, _saved = make_panel(qtbot, tmp_path, engine, ask=ask)
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
    panel.shutdown()
