"""core.settings: round trip, corrupt files moved aside, unknown keys ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.core import paths
from sdstudio.core.settings import (
    DEFAULT_FILENAME_PATTERN,
    EngineSettings,
    Settings,
    load_settings,
    save_settings,
    settings_path,
)

CUSTOM = Settings(
    output_dir="/data/out ü",
    filename_pattern="{date}/{index}-{seed}",
    engine=EngineSettings(
        device="cuda:1", precision="fp16", memory_mode="low", vae_tiling="on", preview_every=0,
        default_model="/models/a.safetensors", model_dirs=("/models", "/more models"),
        lora_dirs=("/loras",),
    ),
    last_request={"prompt": "a cat", "steps": 20},
    ui={"geometry": [1, 2, 3, 4]},
)


def test_round_trip(tmp_path: Path) -> None:
    path = save_settings(CUSTOM, tmp_path / "settings.json")
    assert load_settings(path) == CUSTOM
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["engine"]["model_dirs"] == ["/models", "/more models"]
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_default_location_is_under_sdstudio_home(sdstudio_home: Path) -> None:
    assert settings_path() == paths.config_dir() / "settings.json"
    assert str(settings_path()).startswith(str(sdstudio_home))
    save_settings(CUSTOM)
    try:
        assert load_settings() == CUSTOM
    finally:
        settings_path().unlink()


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "none.json") == Settings()
    assert Settings().filename_pattern == DEFAULT_FILENAME_PATTERN


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2, 3]", b'"text"', b"\xff\xfe\x00garbage\x80", b"",
     b'{"ui": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError in json.loads
     b'{"ui": ' + b"[" * 40 + b"]" * 40 + b"}"],  # parses, but deeper than settings nest
)
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(content)
    assert load_settings(path) == Settings()
    assert not path.exists()
    [aside] = tmp_path.glob("settings.json.bad-*")
    assert aside.read_bytes() == content
    save_settings(CUSTOM, path)  # the next save works, the next load reads it
    assert load_settings(path) == CUSTOM


def test_unknown_and_wrongly_typed_keys_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "output_dir": "/out",
        "from_the_future": {"x": 1},
        "filename_pattern": 42,  # wrong type: default kept
        "engine": {"device": "cpu", "warp_drive": True, "preview_every": "often",
                   "model_dirs": ["/a", "/b"], "lora_dirs": "/single/folder"},
        "ui": "not a mapping",
    }), encoding="utf-8")
    got = load_settings(path)
    assert got.output_dir == "/out"
    assert got.filename_pattern == DEFAULT_FILENAME_PATTERN
    assert got.engine.device == "cpu"
    assert got.engine.preview_every == EngineSettings().preview_every
    assert got.engine.model_dirs == ("/a", "/b")
    assert got.engine.lora_dirs == ("/single/folder",)  # one folder as a string, not letters
    assert got.ui == {}
    assert path.exists()  # usable, so not moved aside


def test_output_path(tmp_path: Path) -> None:
    assert Settings(output_dir=str(tmp_path)).output_path == tmp_path
    assert Settings().output_path == paths.default_output_dir()


def test_save_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_settings(Settings(output_dir="/old"), tmp_path / "settings.json")
    import sdstudio.core.settings as settings_module

    def broken_replace(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(settings_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_settings(Settings(output_dir="/new"), path)
    monkeypatch.undo()
    assert load_settings(path).output_dir == "/old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]
