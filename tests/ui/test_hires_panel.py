"""The prompt panel's hires fix section, driven as a person drives it: collapsed by default,
opened with its button, text to image only; Generate runs both passes (the fake engine) and
the progress bar names the pass; the upscaler list offers the latent modes, the built-ins
and the upscaler files found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from sdstudio.core.settings import EngineSettings, Settings
from sdstudio.testing.fake_engine import FakeScript
from sdstudio.ui.main_window import TAB_IMG2IMG, TAB_TXT2IMG
from sdstudio.worker import JobState
from tests.ui.test_main_window import small, wait_jobs

L = Qt.MouseButton.LeftButton
HIRES_ROWS = ("hires", "hires_upscaler", "hires_scale", "hires_resize_x", "hires_steps",
              "hires_denoising", "hires_sampler", "hires_schedule_type", "hires_prompt",
              "hires_negative_prompt")


def test_the_section_is_collapsed_and_text_to_image_only(qtbot: Any, make_window: Any) -> None:
    w = make_window(fake=FakeScript(), start=False)
    p = w.prompt_panel
    assert p.hires_button.isVisible() and not p.hires_shown()
    assert not any(p.widget(name).isVisible() for name in HIRES_ROWS)
    qtbot.mouseClick(p.hires_button, L)
    assert p.hires_shown()
    assert all(p.widget(name).isVisible() for name in HIRES_ROWS)
    assert p.hires_button.text() == "Hi&res fix"
    p.widget("hires").setChecked(True)
    assert p.hires_button.text() == "Hi&res fix (on)"  # said even when closed
    w.tabs.setCurrentIndex(TAB_IMG2IMG)
    QApplication.processEvents()
    assert not p.hires_button.isVisible()
    assert not any(p.widget(name).isVisible() for name in HIRES_ROWS)
    w.tabs.setCurrentIndex(TAB_TXT2IMG)
    QApplication.processEvents()
    assert p.widget("hires_scale").isVisible()


def test_generate_runs_both_passes_and_shows_the_pass(qtbot: Any, make_window: Any,
                                                      tmp_path: Path) -> None:
    w = make_window(fake=FakeScript(step_delay=0.01))
    p = w.prompt_panel
    small(w, steps=4)
    p.show_hires(True)
    p.widget("hires").click()
    p.widget("hires_upscaler").set_value("Lanczos")
    p.widget("hires_scale").setValue(1.5)
    p.widget("hires_steps").setValue(3)
    p.widget("hires_denoising").setValue(0.45)
    p.widget("hires_sampler").setCurrentText("DPM++ 2M")
    qtbot.keyClicks(p.widget("hires_prompt"), "a red fox, detailed fur")
    texts: list[str] = []
    w.queue.jobProgress.connect(lambda *_: texts.append(w.progress_bar.format()))
    qtbot.mouseClick(p.generate_button, L)
    (job,) = wait_jobs(qtbot, w, 1)
    assert job.state is JobState.DONE, job.failure
    request = job.request
    assert (request.hires, request.hires_upscaler, request.hires_scale, request.hires_steps,
            request.hires_denoising, request.hires_sampler, request.hires_prompt) == (
        True, "Lanczos", 1.5, 3, 0.45, "DPM++ 2M", "a red fox, detailed fur")
    with Image.open(job.images[0]) as im:
        assert im.size == (96, 96)  # 64 px, then 1.5x
        parameters = im.info["parameters"]
    assert "Denoising strength: 0.45, RNG: CPU, Hires upscaler: Lanczos, Hires upscale: 1.5" \
        in parameters
    assert "Hires sampler: DPM++ 2M" in parameters
    assert any("first pass 2/4" in t for t in texts)
    assert any(t.startswith("Step 6/7") and "hires 2/3" in t for t in texts), texts


def test_the_upscaler_list_has_the_files_found(qtbot: Any, make_window: Any,
                                               tmp_path: Path) -> None:
    folder = tmp_path / "upscalers"
    (folder / "sub").mkdir(parents=True)
    (folder / "4x-UltraSharp.pth").write_bytes(b"x")
    (folder / "sub" / "RealESRGAN_x4plus.safetensors").write_bytes(b"x")
    settings = Settings(output_dir=str(tmp_path / "out"), ui={"welcome": "dismissed"},
                        engine=EngineSettings(upscaler_dirs=(str(folder),)))
    w = make_window(fake=FakeScript(), settings=settings)  # started: the folders are read
    picker = w.prompt_panel.widget("hires_upscaler")  # the upscaler picker, with latents
    items = picker.names()
    assert items[:3] == ["None", "Lanczos", "Nearest"]
    assert items[3:9] == ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                          "Latent (bicubic antialiased)", "Latent (nearest)",
                          "Latent (nearest-exact)"]
    assert items[9:] == ["4x-UltraSharp", "sub/RealESRGAN_x4plus"]
    assert picker.value() == "Latent"  # A1111's default
    notes = w.apply_request(w.build_request().replace(hires_upscaler="4x-UltraSharp"))
    assert notes == [] and picker.value() == "4x-UltraSharp"
    notes = w.apply_request(w.build_request().replace(hires_upscaler="gone-4x"))
    assert notes == ["Hires upscaler “gone-4x” is not available here"]
    assert w.build_request().hires_upscaler == "gone-4x"  # kept, not replaced
