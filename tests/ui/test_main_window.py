"""The main window end to end: real tiny models behind the real worker where the engine
matters, the scriptable fake engine where only the window's behaviour does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_INPAINT, MainWindow
from sdstudio.worker import JobState
from tests.ui.helpers import send_drag_and_drop

L = Qt.MouseButton.LeftButton
NO = Qt.KeyboardModifier.NoModifier
LOAD_TIMEOUT = 120_000  # the first test imports torch in the worker thread
RUN_TIMEOUT = 60_000


def wait_model(qtbot: Any, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: w.queue.loaded is not None or (w.message_bar.kind == "error"
                    and w.message_bar.isVisible()), timeout=LOAD_TIMEOUT)
    assert w.queue.loaded is not None, w.message_bar.message


def wait_jobs(qtbot: Any, w: MainWindow, count: int, timeout: int = RUN_TIMEOUT) -> list[Any]:
    qtbot.waitUntil(lambda: len(w.queue.jobs()) >= count
                    and all(j.state.finished for j in w.queue.jobs()), timeout=timeout)
    return w.queue.jobs()


def small(w: MainWindow, prompt: str = "a red fox", size: int = 64, steps: int = 2) -> None:
    p = w.prompt_panel
    p.prompt_edit.setPlainText(prompt)
    p.set_size(size, size)
    p.widget("steps").setValue(steps)
    p.widget("seed").setText("1234")
    p.widget("sampler").setCurrentText("Euler")


def drop_files(target: Any, paths: list[Path]) -> QDropEvent:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return send_drag_and_drop(target, mime)[1]


# ------------------------------------------------------------------ real tiny model
def test_txt2img_by_clicking_generate(qtbot: Any, make_window: Any, tiny_model: Path,
                                      tmp_path: Path) -> None:
    w = make_window(model=str(tiny_model))
    assert w.windowTitle().startswith("SD Studio")
    wait_model(qtbot, w)
    assert "Model:" in w.model_label.text() and w.device_label.text() == "Device: cpu"
    small(w)
    previews: list[int] = []
    w.queue.jobPreview.connect(lambda jid, img: previews.append(img.width()))
    qtbot.mouseClick(w.prompt_panel.generate_button, L)
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure
    assert len(job.images) == 1
    out = Path(job.images[0])
    assert out.is_file() and out.parent == tmp_path / "out"
    with Image.open(out) as im:
        assert im.size == (64, 64)
        assert "a red fox" in im.info["parameters"]
    qtbot.waitUntil(lambda: w.gallery.paths() == [str(out)])
    assert w.txt_viewer.image() is not None and w.txt_viewer.image().width() == 64
    assert previews, "a live preview was shown"
    assert w.progress_bar.format().startswith("Done: 1 image")
    assert w.prompt_panel.reuse_seed_button.isEnabled()


def test_two_queued_requests_run_in_order(qtbot: Any, make_window: Any,
                                          tiny_model: Path) -> None:
    w = make_window(model=str(tiny_model))
    wait_model(qtbot, w)
    small(w, "first")
    first = w.generate()
    small(w, "second")
    second = w.generate()
    assert first is not None and second is not None
    started: list[int] = []
    w.queue.jobStarted.connect(started.append)
    jobs = wait_jobs(qtbot, w, 2)
    assert [j.state for j in jobs] == [JobState.DONE, JobState.DONE]
    assert jobs[0].started <= jobs[1].started and jobs[0].ended <= jobs[1].started
    assert [j.request.prompt for j in jobs] == ["first", "second"]
    qtbot.waitUntil(lambda: len(w.gallery.paths()) == 2)


def test_img2img_by_dropping_a_file_on_the_canvas(qtbot: Any, make_window: Any,
                                                  tiny_model: Path, tmp_path: Path) -> None:
    w = make_window(model=str(tiny_model))
    src = tmp_path / "source.png"
    Image.new("RGB", (96, 64), (200, 40, 40)).save(src)
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.prompt_panel.widget("strength").isVisible()
    drop_files(w.source_canvas.viewer, [src])
    assert w.source_canvas.image() is not None and w.source_canvas.image().width() == 96
    wait_model(qtbot, w)
    small(w, "a painting")
    w.prompt_panel.widget("strength").setValue(0.5)
    job_id = w.generate()
    assert job_id is not None
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure
    assert job.request.mode is Mode.IMG2IMG and job.request.strength == 0.5
    assert Path(job.request.init_image).is_file()
    assert w.img_result.image() is not None


def test_inpaint_end_to_end(qtbot: Any, make_window: Any, tiny_model: Path,
                            tmp_path: Path) -> None:
    w = make_window(model=str(tiny_model))
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    src = tmp_path / "inpaint-source.png"
    Image.fromarray(source).save(src)
    w.tabs.setCurrentIndex(TAB_INPAINT)
    assert w.prompt_panel.widget("mask_blur").isVisible()
    assert w.mask_canvas.load_file(str(src))
    canvas = w.mask_canvas
    canvas.set_brush_size(12)
    canvas.set_hardness(1.0)
    view = canvas.viewer
    at = [view.map_from_image(QPointF(x, 32)).toPoint() for x in (20, 32, 44)]
    qtbot.mousePress(view, L, NO, at[0])
    for p in at[1:]:
        qtbot.mouseMove(view, p)
    qtbot.mouseRelease(view, L, NO, at[-1])
    assert canvas.has_mask()
    mask = np.array(Image.open(w.build_request().mask))
    assert mask.shape == (64, 64) and mask[32, 32] == 255 and mask[5, 5] == 0
    wait_model(qtbot, w)
    small(w, "a hole", 64, 2)
    w.prompt_panel.widget("mask_blur").setValue(0)
    w.prompt_panel.widget("strength").setValue(1.0)
    assert w.generate() is not None
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure
    assert job.request.mode is Mode.INPAINT
    result = np.array(Image.open(job.images[0]).convert("RGB"))
    outside = mask == 0
    assert (result[outside] == source[outside]).all(), "pixels outside the mask are kept"
    assert (result[mask == 255] != source[mask == 255]).any(), "the masked area changed"


def test_corrupt_model_shows_error_and_the_next_generation_works(
        qtbot: Any, make_window: Any, tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for item in tiny_model.iterdir():  # the same configs, garbage weights
        target = broken / item.name
        if item.is_dir():
            target.mkdir()
            for f in item.iterdir():
                data = (b"\x00garbage" * 64 if f.suffix in (".safetensors", ".bin")
                        else f.read_bytes())
                (target / f.name).write_bytes(data)
        else:
            target.write_bytes(item.read_bytes())
    assert json.loads((broken / "model_index.json").read_text())
    w = make_window(model=str(tiny_model))
    wait_model(qtbot, w)
    w.select_model(str(broken))
    qtbot.waitUntil(lambda: w.message_bar.isVisible() and w.message_bar.kind == "error",
                    timeout=RUN_TIMEOUT)
    assert "Could not load the model" in w.message_bar.message
    assert "\n" not in w.message_bar.message
    assert w.message_bar.details  # "Details…" has something to show
    assert w.message_bar.details_button.isVisibleTo(w.message_bar)
    w.select_model(str(tiny_model))
    small(w)
    w.generate()
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure


# ------------------------------------------------------------------------ fake engine
def test_cancel_with_escape(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript(step_delay=0.02))
    small(w, steps=500)
    job_id = w.generate()
    qtbot.waitUntil(lambda: w.queue.job(job_id).step >= 2, timeout=5000)
    assert w.prompt_panel.cancel_button.isEnabled()
    qtbot.keyClick(w.prompt_panel.prompt_edit, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: w.queue.job(job_id).state.finished, timeout=5000)
    assert w.queue.job(job_id).state is JobState.CANCELLED
    assert w.progress_bar.format() == "Cancelled"
    assert not w.message_bar.isVisible()  # a cancel is not an error
    assert not w.prompt_panel.cancel_button.isEnabled()


def test_ctrl_enter_generates_and_queue_shows_jobs(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript(step_delay=0.01))
    small(w, steps=3)
    w.prompt_panel.prompt_edit.setFocus()
    qtbot.keyClick(w.prompt_panel.prompt_edit, Qt.Key.Key_Return,
                   Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: len(w.queue.jobs()) == 1, timeout=3000)
    wait_jobs(qtbot, w, 1, 5000)
    assert w.queue_view.list.model().rowCount() == 1
    text = w.queue.index(0).data()
    assert "a red fox" in text and "done" in text
    assert w.prompt_panel.prompt_edit.toPlainText() == "a red fox"  # no newline typed


def test_job_failure_shows_one_line_with_details(qtbot: Any, make_window: Any) -> None:
    script = FakeScript()
    w = make_window(fake=script)
    script.fail_generate = RuntimeError("CUDA error: device-side assert\nmore text")
    small(w)
    w.generate()
    wait_jobs(qtbot, w, 1, 5000)
    assert w.message_bar.isVisible()
    assert w.message_bar.message == "RuntimeError: CUDA error: device-side assert"
    assert "Traceback" in w.message_bar.details
    small(w)
    w.generate()
    jobs = wait_jobs(qtbot, w, 2, 5000)
    assert jobs[1].state is JobState.DONE


def test_bad_request_is_refused_with_a_message(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert w.generate() is None
    assert "source image" in w.message_bar.message
    w.tabs.setCurrentIndex(TAB_INPAINT)
    assert w.generate() is None
    assert w.queue.rowCount() == 0


def test_parameters_restored_from_a_dropped_png(qtbot: Any, make_window: Any,
                                                tmp_path: Path) -> None:
    from sdstudio.core.request import GenerationInfo
    from sdstudio.storage.png import save_image

    w = make_window(fake=FakeScript())
    request = GenerationRequest(prompt="a castle, (masterpiece:1.2)", negative_prompt="blurry",
                                width=768, height=512, steps=33, cfg_scale=5.5, seed=987654,
                                sampler="DPM++ 2M Karras")
    png = save_image(Image.new("RGB", (32, 32)), request, GenerationInfo(model_name="dream"),
                     tmp_path / "made", "{seed}")
    drop_files(w, [png])
    got = w.prompt_panel.request()
    assert got.prompt == request.prompt and got.negative_prompt == "blurry"
    assert (got.width, got.height, got.steps, got.seed) == (768, 512, 33, 987654)
    assert got.cfg_scale == 5.5 and (got.sampler, got.schedule_type) == ("DPM++ 2M", "Karras")
    assert w.message_bar.kind == "info" and "Restored" in w.message_bar.message
    assert "seed 987654" in w.message_bar.message
    # A1111 infotext only (no sdstudio chunk)
    a1111 = tmp_path / "a1111.png"
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a dog\nNegative prompt: cat\nSteps: 12, Sampler: Euler a, "
                  "CFG scale: 4, Seed: 42, Size: 512x640, Model hash: abc123")
    Image.new("RGB", (8, 8)).save(a1111, pnginfo=info)
    drop_files(w, [a1111])
    got = w.prompt_panel.request()
    assert (got.prompt, got.steps, got.seed, got.width, got.height) == ("a dog", 12, 42, 512, 640)


def test_gallery_lists_earlier_images_and_actions(qtbot: Any, make_window: Any,
                                                  tmp_path: Path, monkeypatch: Any) -> None:
    from sdstudio.core.request import GenerationInfo
    from sdstudio.storage.png import save_image

    out = tmp_path / "out"
    for seed in (1, 2, 3):
        save_image(Image.new("RGB", (64, 48), (seed * 60, 0, 0)),
                   GenerationRequest(prompt=f"old {seed}", seed=seed), GenerationInfo(), out,
                   "{seed}")
    w = make_window(fake=FakeScript())
    w.tabs.setCurrentWidget(w.gallery)
    qtbot.waitUntil(lambda: len(w.gallery.paths()) == 3, timeout=5000)
    w.gallery.list.setCurrentRow(0)
    qtbot.waitUntil(lambda: w.gallery.viewer.image() is not None, timeout=5000)
    qtbot.waitUntil(lambda: "old" in w.gallery.info.text(), timeout=5000)
    qtbot.mouseClick(w.gallery.reuse_button, L)
    assert w.prompt_panel.prompt_edit.toPlainText().startswith("old")
    qtbot.mouseClick(w.gallery.img2img_button, L)
    assert w.tabs.currentIndex() == TAB_IMG2IMG and w.source_canvas.image() is not None
    w.tabs.setCurrentWidget(w.gallery)
    qtbot.mouseClick(w.gallery.inpaint_button, L)
    assert w.tabs.currentIndex() == TAB_INPAINT and w.mask_canvas.image() is not None
    w.tabs.setCurrentWidget(w.gallery)
    path = w.gallery.current_path()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # the trash goes there
    monkeypatch.setattr(type(w.gallery), "_ask", lambda *a, **k: False)
    assert not w.gallery.delete_current()
    assert Path(path).exists()
    monkeypatch.setattr(type(w.gallery), "_ask", lambda *a, **k: True)
    assert w.gallery.delete_current()
    assert not Path(path).exists() and len(w.gallery.paths()) == 2
    w.gallery.copy_current()
    assert not QApplication.clipboard().image().isNull()


def test_mask_blur_preview_shows_the_blur_from_the_start(qtbot: Any, make_window: Any) -> None:
    """The mask you see is the one used: the canvas previews the panel's mask blur (4 px by
    default) before anything is changed, and follows it (issue 17, item 2)."""
    w = make_window(fake=FakeScript(), start=False)
    assert w.mask_canvas.blur_preview() == w.prompt_panel.control("mask_blur").value() == 4
    w.prompt_panel.widget("mask_blur").setValue(9)
    assert w.mask_canvas.blur_preview() == 9


def test_settings_persist_across_a_restart(qtbot: Any, make_window: Any,
                                           isolated_config: Path) -> None:
    from sdstudio.core.settings import load_settings

    w = make_window(fake=FakeScript())
    p = w.prompt_panel
    p.prompt_edit.setPlainText("persist me")
    p.negative_edit.setPlainText("not this")
    p.set_size(832, 1216)
    p.widget("steps").setValue(31)
    p.widget("cfg_scale").setValue(6.5)
    p.widget("sampler").setCurrentText("DDIM")
    p.widget("seed").setText("77")
    p.widget("batch_count").setValue(3)
    p.widget("clip_skip").setValue(2)
    p.widget("rng").setCurrentIndex(p.widget("rng").findData("device"))
    p.show_more(True)
    w.source_canvas.set_fit_mode("fill")
    new = w.settings.replace(filename_pattern="{date}/{seed}",
                             engine=w.settings.engine.replace(memory_mode="low",
                                                              model_dirs=("/models",)))
    w.apply_settings(new)
    w.close()
    saved = load_settings()
    assert saved.filename_pattern == "{date}/{seed}"
    assert saved.engine.memory_mode == "low" and saved.engine.model_dirs == ("/models",)
    w2 = make_window(fake=FakeScript(), settings=saved)
    r = w2.prompt_panel.request()
    assert (r.prompt, r.negative_prompt, r.width, r.height, r.steps, r.cfg_scale, r.sampler,
            r.seed, r.batch_count) == ("persist me", "not this", 832, 1216, 31, 6.5, "DDIM",
                                       77, 3)
    assert (r.clip_skip, r.rng, w2.source_canvas.fit_mode()) == (2, "device", "fill")
    assert w2.prompt_panel.more_shown()


def test_settings_dialog_round_trip(qtbot: Any, make_window: Any) -> None:
    from sdstudio.ui.settings_dialog import SettingsDialog

    w = make_window(fake=FakeScript(), start=False)
    dialog = SettingsDialog(w.settings, w)
    qtbot.addWidget(dialog)
    dialog.output_edit.setText("/tmp/elsewhere")
    dialog.pattern_edit.setText("{model}/{index}")
    dialog.model_dirs.add_folder("/data/models")
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData("bf16"))
    dialog.memory_combo.setCurrentIndex(dialog.memory_combo.findData("off"))
    dialog.preview_spin.setValue(3)
    s = dialog.result_settings()
    assert s.output_dir == "/tmp/elsewhere" and s.filename_pattern == "{model}/{index}"
    e = s.engine
    assert (e.device, e.precision, e.memory_mode, e.preview_every, e.model_dirs) == (
        "cpu", "bf16", "off", 3, ("/data/models",))


def test_demo_model_is_labelled_and_real_models_are_offered(qtbot: Any, make_window: Any,
                                                            tmp_path: Path,
                                                            tiny_model: Path) -> None:
    w = make_window(fake=FakeScript(), start=False)
    assert w.model_combo.currentText().startswith("Demo model")
    assert "untrained demo (images are noise)" in w.model_combo.currentText()
    assert w.demo_badge.isVisibleTo(w)
    assert w.open_model_file_action.isVisible() and w.open_model_folder_action.isVisible()
    w._on_models_listed([{"name": "sd15", "path": str(tiny_model)}])
    assert w.model_combo.findData(str(tiny_model)) > 0


def test_model_list_comes_from_the_worker(qtbot: Any, make_window: Any, tiny_model: Path,
                                          isolated_config: Path) -> None:
    from sdstudio.core.settings import EngineSettings, Settings

    settings = Settings(engine=EngineSettings(model_dirs=(str(tiny_model.parent),)))
    w = make_window(fake=FakeScript(), settings=settings)
    qtbot.waitUntil(lambda: w.model_combo.findData(str(tiny_model)) > 0, timeout=10_000)


def test_prompt_token_counter(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript(), start=False)
    p = w.prompt_panel
    p.prompt_edit.setPlainText("a photo of a cat")
    qtbot.waitUntil(lambda: p.prompt_counter.text() == "5/75", timeout=5000)
    p.prompt_edit.setPlainText(", ".join(["red apple"] * 30))
    qtbot.waitUntil(lambda: p.prompt_counter.text() == "89/150", timeout=5000)
    assert p.prompt_counter.property("over") == "true"
    p.negative_edit.setPlainText("blurry")
    qtbot.waitUntil(lambda: p.negative_counter.text() == "1/75", timeout=5000)


def test_prompt_panel_controls(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript(), start=False)
    p = w.prompt_panel
    p.set_size(1216, 832)
    qtbot.mouseClick(p.swap_button, L)
    assert (p.widget("width").value(), p.widget("height").value()) == (832, 1216)
    p.widget("seed").setText("55")
    qtbot.mouseClick(p.random_seed_button, L)
    assert p.seed() == -1
    p.set_last_seed(4242)
    qtbot.mouseClick(p.reuse_seed_button, L)
    assert p.seed() == 4242
    actions = [a.text() for a in p.preset_button.menu().actions() if not a.isSeparator()]
    for size in ("512 × 512", "768 × 768", "1024 × 1024", "1152 × 896", "896 × 1152",
                 "1216 × 832", "832 × 1216", "1344 × 768", "768 × 1344", "1536 × 640",
                 "640 × 1536"):
        assert size in actions
    assert not p.widget("strength").isVisibleTo(p)
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    assert p.widget("strength").isVisibleTo(p) and not p.widget("mask_blur").isVisibleTo(p)
    w.tabs.setCurrentIndex(TAB_INPAINT)
    assert p.widget("mask_blur").isVisibleTo(p) and p.widget("inpaint_only_masked").isVisibleTo(p)


def test_add_panel_inserts_a_tab_before_the_gallery(qtbot: Any, make_window: Any) -> None:
    from PySide6.QtWidgets import QLabel

    w = make_window(fake=FakeScript(), start=False)
    index = w.add_panel(QLabel("batch"), "&Batch", "batch")
    assert w.tabs.tabText(index) == "&Batch"
    assert w.tabs.indexOf(w.gallery) == index + 1


@pytest.mark.parametrize("exc_in_thread", [False, True])
def test_uncaught_exceptions_are_logged_and_shown(qtbot: Any, make_window: Any,
                                                  exc_in_thread: bool,
                                                  tmp_path: Path, monkeypatch: Any) -> None:
    import sys
    import threading

    from sdstudio import app

    monkeypatch.setenv("SDSTUDIO_LOG_DIR", str(tmp_path / "logs"))
    w = make_window(fake=FakeScript(), start=False)
    monkeypatch.setattr(app, "_WINDOW", w)
    old_hooks = sys.excepthook, threading.excepthook
    try:
        app.setup_logging()
        app.install_exception_hooks()
        try:
            raise ValueError("kaboom")
        except ValueError:
            if exc_in_thread:
                t = threading.Thread(target=lambda: 1 / 0, name="helper")
                t.start()
                t.join()
            else:
                sys.excepthook(*sys.exc_info())  # type: ignore[arg-type]
        qtbot.waitUntil(lambda: w.message_bar.isVisible(), timeout=3000)
        assert "Unexpected error" in w.message_bar.message
        assert ("ZeroDivisionError" if exc_in_thread else "kaboom") in w.message_bar.message
        import logging

        for h in logging.getLogger("sdstudio").handlers:
            h.flush()
        log_file = app.setup_logging()
        assert "Traceback" in Path(log_file).read_text()
    finally:
        sys.excepthook, threading.excepthook = old_hooks
        import logging

        root = logging.getLogger("sdstudio")
        for h in list(root.handlers):
            if getattr(h, "_sdstudio", False):
                root.removeHandler(h)
                h.close()


def test_progress_text() -> None:
    from sdstudio.core.events import Progress
    from sdstudio.ui.main_window import progress_text

    value, maximum, text = progress_text(Progress(5, 20, 2, 3, 10.0, 0.5))
    assert (value, maximum) == (25, 60)
    assert text == "Step 5/20 · run 2/3 · 0.50 s/it · 18 s left"
    assert progress_text(Progress(1, 10, s_per_it=2.0))[2] == "Step 1/10 · 2.00 s/it · 18 s left"


def test_progress_is_one_deferred_paint_of_the_bar(qtbot: Any, make_window: Any) -> None:
    """A step's progress sets the bar's range, value and text without the synchronous
    repaint QProgressBar.setValue does by itself: one paint, later, with the other paints."""
    from PySide6.QtCore import QEvent, QObject

    w = make_window(fake=FakeScript())
    w.show()
    qtbot.waitExposed(w)
    paints: list[int] = []

    class Count(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            if event.type() == QEvent.Type.Paint:
                paints.append(1)
            return False

    counter = Count()
    w.progress_bar.installEventFilter(counter)
    QApplication.processEvents()
    paints.clear()
    w._set_progress(20, 5, "Step 5/20")
    assert not paints  # nothing painted inside the step's handler
    assert (w.progress_bar.maximum(), w.progress_bar.value(), w.progress_bar.format()) == (
        20, 5, "Step 5/20")
    assert w.progress_bar.updatesEnabled()
    qtbot.waitUntil(lambda: bool(paints), timeout=2000)
    assert len(paints) == 1
    paints.clear()
    w._set_progress(20, 5, "Step 5/20")  # nothing new: nothing to paint
    QApplication.processEvents()
    assert not paints
