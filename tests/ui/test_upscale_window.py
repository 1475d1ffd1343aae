"""The window's "Upscale…": the upscaler picker (reused by the hires fix), the dialog, and an
upscale run on the background worker with the fake engine (progress, cancel, the result in
the gallery, refusals shown in one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from sdstudio.core.settings import EngineSettings, Settings, save_settings
from sdstudio.storage.png import read_texts
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.result_actions import menu_action
from sdstudio.ui.upscale_dialog import UpscaleDialog
from sdstudio.ui.upscaler_picker import UpscalerPicker, upscaler_names
from sdstudio.worker import JobState


def test_picker_lists_builtins_latent_modes_and_models(qtbot: Any) -> None:
    picker = UpscalerPicker(models=["4x-UltraSharp", "sub/RealESRGAN_x4plus"])
    qtbot.addWidget(picker)
    assert picker.names() == ["None", "Lanczos", "Nearest", "4x-UltraSharp",
                              "sub/RealESRGAN_x4plus"]
    assert picker.value() == "Lanczos"
    seen: list[str] = []
    picker.valueChanged.connect(seen.append)
    picker.set_value("4x-ultrasharp")
    assert picker.value() == "4x-UltraSharp" and seen == ["4x-UltraSharp"]
    picker.set_models(["4x-UltraSharp", "2x-new"])  # the selection survives a refresh
    assert picker.value() == "4x-UltraSharp"
    picker.set_value("gone-model")  # a name that is not there is kept, marked
    assert picker.value() == "gone-model" and "(not found)" in picker.currentText()
    hires = UpscalerPicker(latent=True)
    qtbot.addWidget(hires)
    assert "Latent (bicubic antialiased)" in hires.names()
    hires.set_value("latent (nearest-exact)")
    assert hires.value() == "Latent (nearest-exact)"
    assert "hires fix only" in hires.itemData(hires.currentIndex(), 3)  # tooltip role


def test_upscaler_names_come_from_the_folders(tmp_path: Path) -> None:
    (tmp_path / "ups" / "sub").mkdir(parents=True)
    for name in ("4x-a.pth", "sub/2x-b.safetensors", "notes.txt"):
        (tmp_path / "ups" / name).write_bytes(b"x")
    assert upscaler_names(EngineSettings(upscaler_dirs=(str(tmp_path / "ups"),))) == [
        "4x-a", "sub/2x-b"]


def test_dialog_shows_the_result_size_and_refuses_too_large(qtbot: Any) -> None:
    dialog = UpscaleDialog("/x/a.png", (512, 384), ["4x-a"], upscaler="4x-a", scale=2)
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert dialog.result_size.text() == "1024×768" and ok.isEnabled()
    dialog.scale.setValue(2.5)
    assert dialog.result_size.text() == "1280×960"
    assert dialog.choice() == ("4x-a", 2.5)
    big = UpscaleDialog("/x/b.png", (4096, 4096), [], scale=4)
    qtbot.addWidget(big)
    assert not big.buttons.button(QDialogButtonBox.StandardButton.Ok).isEnabled()
    assert "at most" in big.result_size.text()


@pytest.fixture
def upscale_window(make_window: Any, tmp_path: Path) -> Any:
    ups = tmp_path / "upscalers"
    ups.mkdir()
    (ups / "4x-fake.pth").write_bytes(b"weights")  # the fake engine resizes for any listed
    settings = Settings(output_dir=str(tmp_path / "out"),
                        engine=EngineSettings(upscaler_dirs=(str(ups),)),
                        ui={"welcome": "dismissed"})
    save_settings(settings)
    script = FakeScript(step_delay=0.0, upscale_tiles=3)
    window = make_window(fake=script, settings=settings)
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 48), "teal").save(source)
    window.gallery.add_image(str(source), select=True)
    return window, script, source


def _accept_upscale_dialog(choose: str, scale: float) -> None:
    dialog = QApplication.activeModalWidget()
    assert isinstance(dialog, UpscaleDialog)
    dialog.picker.set_value(choose)
    dialog.scale.setValue(scale)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()


def test_upscale_from_the_gallery_menu_runs_on_the_worker_and_shows_the_result(
        qtbot: Any, upscale_window: Any, tmp_path: Path) -> None:
    w, _script, source = upscale_window
    menu = w.gallery.context_menu()
    action = menu_action(menu, "upscale")
    assert action.isEnabled() and action.text() == "&Upscale…"
    QTimer.singleShot(0, lambda: _accept_upscale_dialog("4x-fake", 2))
    action.trigger()
    qtbot.waitUntil(lambda: bool(w.queue.jobs()) and w.queue.jobs()[-1].state.finished,
                    timeout=10_000)
    job = w.queue.jobs()[-1]
    assert job.state is JobState.DONE, job.failure
    saved = Path(job.images[0])
    assert saved == tmp_path / "out" / "extras" / "source-2x.png"
    qtbot.waitUntil(lambda: w.gallery.current_path() == str(saved), timeout=5000)
    with Image.open(saved) as im:
        assert im.size == (128, 96)
    assert read_texts(saved)[0]["extras"] == (
        "Postprocess upscale by: 2, Postprocess upscaler: 4x-fake")
    assert w._upscale_choice == ("4x-fake", 2.0)  # offered again next time
    dialog = w.upscale_dialog(str(source))
    assert dialog is not None and dialog.choice() == ("4x-fake", 2.0)
    assert "4x-fake" in dialog.picker.names()


def test_the_result_pane_menu_offers_upscale_too(qtbot: Any, upscale_window: Any) -> None:
    w, _script, source = upscale_window
    from sdstudio.ui.result_actions import ResultHandlers, ResultTarget, build_menu

    calls: list[str] = []
    handlers = ResultHandlers(
        to_img2img=print, to_inpaint=print, reuse_parameters=print, reuse_seed=print,
        full_screen=print, delete=print, message=print, upscale=calls.append)
    menu = build_menu(w, ResultTarget(str(source)), handlers)
    menu_action(menu, "upscale").trigger()
    assert calls == [str(source)]
    no_file = build_menu(w, ResultTarget(""), handlers)
    assert not menu_action(no_file, "upscale").isEnabled()
    w.prompt_panel.control("width").set_value(64)
    w.prompt_panel.control("height").set_value(64)
    job_id = w.generate()
    qtbot.waitUntil(lambda: w.queue.job(job_id).state.finished, timeout=10_000)
    made = w.queue.job(job_id).images[0]
    asked: list[str] = []
    w.upscale_image = asked.append  # the dialog itself is driven in the test above
    result_menu = w.result_menu(w.txt_viewer)
    assert result_menu is not None
    menu_action(result_menu, "upscale").trigger()
    assert asked == [made]


def test_progress_and_cancel_between_tiles(qtbot: Any, upscale_window: Any,
                                           tmp_path: Path) -> None:
    w, script, source = upscale_window
    script.step_delay = 0.1
    script.upscale_tiles = 50
    job_id = w.start_upscale(str(source), "Lanczos", 4)
    qtbot.waitUntil(lambda: w.queue.job(job_id).items_done >= 2, timeout=10_000)
    assert w.progress_bar.format().startswith("Upscale source.png ×4 (Lanczos): tile ")
    assert w.cancel_action.isEnabled()
    w.cancel_action.trigger()
    qtbot.waitUntil(lambda: w.queue.job(job_id).state.finished, timeout=10_000)
    job = w.queue.job(job_id)
    assert job.state is JobState.CANCELLED and job.items_done < 50
    assert not (tmp_path / "out" / "extras").exists() or not any(
        (tmp_path / "out" / "extras").iterdir())
    assert not w.message_bar.isVisible()


def test_an_unknown_upscaler_fails_in_one_line(qtbot: Any, upscale_window: Any) -> None:
    w, _script, source = upscale_window
    job_id = w.start_upscale(str(source), "R-ESRGAN 4x+", 2)
    qtbot.waitUntil(lambda: w.queue.job(job_id).state.finished, timeout=10_000)
    assert w.queue.job(job_id).state is JobState.FAILED
    qtbot.waitUntil(lambda: w.message_bar.isVisible() and w.message_bar.kind == "error",
                    timeout=5000)
    assert "unknown upscaler 'R-ESRGAN 4x+'" in w.message_bar.message
    assert "\n" not in w.message_bar.message
