"""The Settings dialog's Device tab: Speed: compile round trip, and the status bar's
precision with the reason it was chosen."""

from __future__ import annotations

from typing import Any

from sdstudio.core.events import ModelReady
from sdstudio.core.settings import EngineSettings, Settings


def test_compile_setting_round_trip(qtbot: Any) -> None:
    from sdstudio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), None)
    qtbot.addWidget(dialog)
    assert not dialog.compile_check.isChecked()  # off by default
    dialog.compile_check.setChecked(True)
    assert dialog.result_settings().engine.compile_unet
    again = SettingsDialog(Settings(engine=EngineSettings(compile_unet=True)), None)
    qtbot.addWidget(again)
    assert again.compile_check.isChecked()
    again.compile_check.setChecked(False)
    assert not again.result_settings().engine.compile_unet


def test_status_bar_shows_the_precision_and_why(qtbot: Any, make_window: Any) -> None:
    from sdstudio.testing.fake_engine import FakeScript

    w = make_window(fake=FakeScript(), start=False)
    w._on_model_ready(ModelReady(name="m", arch="sd1", device="cpu", dtype="bf16",
                                 precision_reason="CPU with native bf16 (avx512_bf16): bf16"))
    assert w.dtype_label.text() == "bf16"
    assert "avx512_bf16" in w.dtype_label.toolTip()
