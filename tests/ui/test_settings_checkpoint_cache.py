"""The "Checkpoints to cache in RAM" setting (engine/model_cache.py) in the Settings dialog and
as ``--checkpoint-cache`` on the command line, saved and read back with the settings."""

from __future__ import annotations

from typing import Any

import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.settings import MAX_CACHED_CHECKPOINTS, EngineSettings, Settings


def test_dialog_round_trip(qtbot: Any) -> None:
    from sdstudio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), None)
    qtbot.addWidget(dialog)
    assert dialog.cache_spin.value() == -1 and dialog.cache_spin.text() == "Automatic"
    dialog.cache_spin.setValue(0)
    assert dialog.result_settings().engine.checkpoint_cache == 0
    dialog.cache_spin.setValue(MAX_CACHED_CHECKPOINTS + 5)  # the spin box stops at the most
    assert dialog.result_settings().engine.checkpoint_cache == MAX_CACHED_CHECKPOINTS
    again = SettingsDialog(Settings(engine=EngineSettings(checkpoint_cache=2)), None)
    qtbot.addWidget(again)
    assert again.cache_spin.value() == 2


def test_saved_and_read_back() -> None:
    data = Settings(engine=EngineSettings(checkpoint_cache=3)).to_dict()
    assert Settings.from_dict(data).engine.checkpoint_cache == 3
    data["engine"]["checkpoint_cache"] = "lots"  # a hand-edited file: the default instead
    assert Settings.from_dict(data).engine.checkpoint_cache == -1


def test_command_line_option() -> None:
    from sdstudio import cli
    from sdstudio.cli.request_args import engine_settings_from_args

    parser = cli.build_parser()
    settings = Settings()
    for value in ("0", "2", "-1"):
        args = parser.parse_args(["batch", "prompts.txt", "--checkpoint-cache", value])
        assert engine_settings_from_args(args, settings).checkpoint_cache == int(value)
    args = parser.parse_args(["generate", "-p", "x"])
    assert engine_settings_from_args(args, settings).checkpoint_cache == -1
    for bad in ("-2", str(MAX_CACHED_CHECKPOINTS + 1)):
        args = parser.parse_args(["generate", "-p", "x", "--checkpoint-cache", bad])
        with pytest.raises(RequestError, match="--checkpoint-cache"):
            engine_settings_from_args(args, settings)
