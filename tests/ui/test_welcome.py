"""The first-start welcome panel (ui.welcome): when it shows, what it offers, what its buttons
do to the settings (and through them to the queue and the saved file), and that it goes once
a real model is in use. The window runs the fake engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core.other_apps import FoundFolder, Install, ScanResult
from sdstudio.core.settings import EngineSettings, Settings, load_settings
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.main_window import TAB_TXT2IMG
from sdstudio.ui.welcome import WELCOME_KEY, WelcomePanel, should_welcome


def touch(path: Path, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def comfy_result(root: Path) -> ScanResult:
    """A ComfyUI install under ``root`` with one checkpoint, one LoRA, one VAE, one
    embedding, as other_apps reports it."""
    folders = []
    for kind, sub in (("checkpoints", "checkpoints"), ("loras", "loras"), ("vae", "vae"),
                      ("embeddings", "embeddings")):
        touch(root / "models" / sub / f"{sub}-1.safetensors")
        folders.append(FoundFolder("ComfyUI", kind, str(root / "models" / sub), 1, True,
                                   str(root)))
    return ScanResult((Install("ComfyUI", str(root), tuple(folders)),))


def make_panel(qtbot: Any, window: Any, result: ScanResult) -> WelcomePanel:
    panel = WelcomePanel(window, scan=lambda cancelled: result)
    panel.start()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=5000)
    return panel


def test_should_welcome() -> None:
    assert should_welcome(Settings())
    assert not should_welcome(Settings(engine=EngineSettings(default_model="/m.safetensors")))
    assert not should_welcome(Settings(engine=EngineSettings(model_dirs=("/models",))))
    assert not should_welcome(Settings(ui={"recent_models": ["/m.safetensors"]}))
    assert not should_welcome(Settings(ui={WELCOME_KEY: "dismissed"}))
    # LoRA or VAE folders alone do not make a real model
    assert should_welcome(Settings(engine=EngineSettings(lora_dirs=("/l",), vae_dirs=("/v",))))


def test_panel_says_the_demo_is_noise_and_how_to_open_a_model(qtbot: Any, make_window: Any
                                                              ) -> None:
    w = make_window(fake=FakeScript())
    panel = make_panel(qtbot, w, ScanResult())
    assert panel.isVisible() and panel.parent() is w.txt_viewer
    text = panel.demo_label.text()
    assert "untrained" in text and "noise" in text
    assert "No model folders of AUTOMATIC1111, Forge, ComfyUI, InvokeAI, Fooocus or SwarmUI" \
        in panel.status_label.text()
    assert not panel.use_button.isVisible()
    assert panel.open_button.isVisible() and "Open model file" in panel.open_button.text()
    # it lies inside the Text to image result area, whole
    assert w.txt_viewer.rect().contains(panel.geometry())
    w.tabs.setCurrentIndex(TAB_TXT2IMG + 1)
    assert not panel.isVisible()  # only over the Text to image tab
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    assert panel.isVisible()


def test_use_these_folders_sets_every_kind_and_tells_the_queue(qtbot: Any, make_window: Any,
                                                               tmp_path: Path) -> None:
    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)
    w.apply_settings(w.settings.replace(engine=w.settings.engine.replace(
        lora_dirs=("/my/loras",))))
    root = tmp_path / "ComfyUI"
    panel = make_panel(qtbot, w, comfy_result(root))
    assert [b.text().split(":")[0] for b, _ in panel._boxes] == [
        "Models", "LoRAs", "VAEs", "Embeddings"]
    assert all(b.isChecked() for b, _ in panel._boxes) and panel.use_button.isEnabled()
    panel._boxes[3][0].setChecked(False)  # not the embeddings
    with (qtbot.waitSignal(w.queue.modelsListed, timeout=10_000) as listed,
          qtbot.waitSignal(panel.applied) as applied):
        panel.use_button.click()
    added = applied.args[0]
    assert [f.kind for f in added] == ["checkpoints", "loras", "vae"]
    eng = w.settings.engine
    assert eng.model_dirs == (str(root / "models" / "checkpoints"),)
    assert eng.lora_dirs == ("/my/loras", str(root / "models" / "loras"))
    assert eng.vae_dirs == (str(root / "models" / "vae"),)
    assert eng.embedding_dirs == ()
    assert load_settings().engine == eng  # saved
    assert w.queue._settings == eng  # the queue (and its worker) were told
    # the rescan found no model the engine can open (16 zero bytes): said so, demo kept
    assert listed.args[0] == []
    assert "None of the files" in panel.status_label.text()
    assert w.current_model == "" and panel.isVisible()
    assert not panel.use_button.isEnabled()  # applied once
    panel._boxes[3][0].setChecked(True)  # the one left out can still be added
    assert panel.use_button.isEnabled()
    panel.use_button.click()
    assert w.settings.engine.embedding_dirs == (str(root / "models" / "embeddings"),)
    assert w.settings.engine.model_dirs == eng.model_dirs
    assert not panel.use_button.isEnabled()


def test_first_listed_model_is_loaded_and_the_panel_goes(qtbot: Any, make_window: Any,
                                                         tmp_path: Path) -> None:
    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)
    panel = make_panel(qtbot, w, comfy_result(tmp_path / "ComfyUI"))
    panel.use_folders()
    inpaint = touch(tmp_path / "ComfyUI" / "models" / "checkpoints" / "a-inpainting.safetensors")
    plain = tmp_path / "ComfyUI" / "models" / "checkpoints" / "checkpoints-1.safetensors"
    with qtbot.waitSignal(panel.finished, timeout=10_000):
        w.queue.modelsListed.emit([
            {"name": "a-inpainting", "path": str(inpaint), "arch": "sd1-inpaint"},
            {"name": "checkpoints-1", "path": str(plain), "arch": "sd1"}])
        assert "Loading “checkpoints-1”" in panel.status_label.text()
    assert w.current_model == str(plain)  # loaded: a real model, not the inpaint one
    assert not panel.isVisible()
    assert w.settings.engine.default_model == str(plain)
    assert not should_welcome(load_settings())  # the next start shows no welcome


def test_opening_a_model_file_elsewhere_ends_the_welcome(qtbot: Any, make_window: Any,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    w = make_window(fake=FakeScript())
    panel = make_panel(qtbot, w, ScanResult())
    model = touch(tmp_path / "dreamshaper_8.safetensors")
    from sdstudio.ui import file_dialogs

    monkeypatch.setattr(file_dialogs, "open_file", lambda *a, **k: str(model))
    with qtbot.waitSignal(panel.finished, timeout=10_000):
        panel.open_button.click()  # the window's own "Open model file…"
    assert w.current_model == str(model) and not panel.isVisible()


def test_dont_show_again_is_saved(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    panel = make_panel(qtbot, w, ScanResult())
    panel.dismiss_button.click()
    assert not panel.isVisible()
    assert w.settings.ui[WELCOME_KEY] == "dismissed"
    assert load_settings().ui[WELCOME_KEY] == "dismissed"
    assert not should_welcome(load_settings())


def test_close_and_a_generation_hide_it_for_this_start_only(qtbot: Any, make_window: Any
                                                           ) -> None:
    w = make_window(fake=FakeScript())
    qtbot.waitUntil(lambda: w.queue.loaded is not None, timeout=10_000)
    panel = make_panel(qtbot, w, ScanResult())
    saved = load_settings().ui
    panel.close_button.click()
    assert not panel.isVisible() and load_settings().ui == saved  # only for this start
    again = make_panel(qtbot, w, ScanResult())
    w.prompt_panel.prompt_edit.setPlainText("a fox")
    w.prompt_panel.set_size(64, 64)
    w.prompt_panel.widget("steps").setValue(1)
    with qtbot.waitSignal(again.finished, timeout=10_000):
        w.generate()
    assert not again.isVisible()  # the result is not covered
    qtbot.waitUntil(lambda: not w.queue.busy, timeout=10_000)


def test_real_search_runs_in_the_background_with_home_patched(
        qtbot: Any, make_window: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    root = home / "ComfyUI"
    touch(root / "folder_paths.py")
    (root / "comfy").mkdir()
    touch(root / "models" / "checkpoints" / "sd15.safetensors")
    touch(root / "models" / "loras" / "detail.safetensors")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.delenv("INVOKEAI_ROOT", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    w = make_window(fake=FakeScript())
    panel = WelcomePanel(w)
    gui = threading.get_ident()
    panel.start()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=10_000)
    assert threading.get_ident() == gui
    offered = [(f.app, f.kind, f.folder, f.files) for _, f in panel._boxes]
    assert ("ComfyUI", "checkpoints", str(root / "models" / "checkpoints"), 1) in offered
    assert ("ComfyUI", "loras", str(root / "models" / "loras"), 1) in offered
    assert "~/ComfyUI/models/checkpoints" in panel._boxes[0][0].text()
    assert not panel._runner.alive  # type: ignore[union-attr]


def test_shutdown_stops_a_search_at_once(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript())
    started = threading.Event()

    def slow(cancelled: Any) -> ScanResult:
        started.set()
        while not cancelled():
            time.sleep(0.01)
        return ScanResult(complete=False)

    panel = WelcomePanel(w, scan=slow)
    panel.start()
    assert started.wait(5)
    t0 = time.monotonic()
    panel.shutdown()
    assert time.monotonic() - t0 < 1.5
    assert not panel._runner.alive  # type: ignore[union-attr]
    assert panel.result is None  # a stopped search shows nothing


def test_fits_a_small_result_area(qtbot: Any, make_window: Any, tmp_path: Path) -> None:
    """At 1280x720 the panel stays inside the result area (it scrolls inside), and follows the
    area's size."""
    w = make_window(fake=FakeScript())
    w.showNormal()
    w.resize(1280, 720)
    panel = make_panel(qtbot, w, comfy_result(tmp_path / "ComfyUI"))
    qtbot.waitUntil(lambda: w.txt_viewer.rect().contains(panel.geometry()), timeout=3000)
    w.resize(1100, 640)
    qtbot.waitUntil(lambda: w.txt_viewer.rect().contains(panel.geometry()), timeout=3000)
    assert panel.width() <= w.txt_viewer.width()


def test_the_window_welcomes_on_a_first_start_only(qtbot: Any, make_window: Any,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    first = make_window(fake=FakeScript(), settings=Settings(output_dir=str(tmp_path / "o")))
    assert first.welcome is not None
    first.tabs.setCurrentIndex(TAB_TXT2IMG)
    qtbot.waitUntil(lambda: first.welcome.isVisible(), timeout=5_000)
    returning = make_window(fake=FakeScript(), settings=Settings(
        output_dir=str(tmp_path / "o"), engine=EngineSettings(model_dirs=(str(tmp_path),))))
    assert returning.welcome is None
