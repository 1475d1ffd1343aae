"""SD Studio's own model folders by kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.core import paths


def test_every_kind_has_its_own_folder_under_the_data_dir(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path))
    monkeypatch.delenv("SDSTUDIO_DATA_DIR", raising=False)
    folders = {kind: paths.model_dir(kind) for kind in paths.MODEL_KINDS}
    assert len(set(folders.values())) == len(folders)
    for folder in folders.values():
        assert folder.parent == tmp_path / "data" / "models"
    assert paths.upscaler_dir() == folders["upscaler"]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        paths.model_dir("../outside")
