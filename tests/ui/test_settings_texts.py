"""Settings texts read as English: "every step", "every 4 steps", "Never"."""

from __future__ import annotations

from typing import Any


def test_preview_interval_reads_as_english(qtbot: Any) -> None:
    from sdstudio.ui.settings_dialog import EveryStepsSpin

    spin = EveryStepsSpin()
    qtbot.addWidget(spin)
    spin.setRange(0, 100)
    shown = []
    for value in (0, 1, 4):
        spin.setValue(value)
        shown.append(spin.text())
    assert shown == ["Never", "every step", "every 4 steps"]
    spin.lineEdit().setText("every 12 steps")
    spin.interpretText()
    assert spin.value() == 12
    spin.lineEdit().setText("every step")
    spin.interpretText()
    assert spin.value() == 1
