"""Helpers shared by the model manager's tests: small safetensors files with chosen tensor
names and shapes, the manager opened in a window, its rows as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sdstudio.testing.model_files import write_safetensors

__all__ = ["SD1_LORA", "XL_LORA", "manager_home", "open_manager", "rows", "write_safetensors"]


SD1_LORA = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down"
            ".weight": [4, 768]}
XL_LORA = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1280]}


@pytest.fixture
def manager_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SD Studio's own folders for this test only (the settings stay isolated_config's),
    and no search of the home folder for other apps."""
    root = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(root))
    monkeypatch.setattr("sdstudio.ui.model_manager.find_other_app_folders", lambda: [])
    return root


def open_manager(window: Any, qtbot: Any, listings: int = 1) -> Any:
    manager = window.open_model_manager()
    qtbot.waitUntil(lambda: manager.listed_count >= listings, timeout=20_000)
    return manager


def rows(manager: Any) -> dict[str, tuple[str, ...]]:
    """name -> (kind, architecture, size, hash, where) of the rows shown."""
    from sdstudio.ui.model_manager_downloads import tree_items

    return {item.text(0): tuple(item.text(c) for c in range(1, 6))
            for item in tree_items(manager.tree) if not item.isHidden()}
