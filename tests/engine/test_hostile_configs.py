"""Attack: a model file whose embedded diffusers config (or a model folder whose
model_index.json) names paths, tokenizers or classes of its choosing. Before the fix a
``.safetensors`` file could write ``config.json`` / ``merges.txt`` anywhere on disk, copy files
from anywhere into the cache and make diffusers import any module. Now the config is checked
whole before anything is written: nothing outside the cache is created, changed or read."""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdstudio.core import paths
from sdstudio.core.errors import ModelError
from sdstudio.engine.config_check import check_embedded_config
from sdstudio.engine.ldm_layout import CONFIG_METADATA_KEY, embedded_config, materialize_config
from sdstudio.engine.models import check_diffusers_folder
from sdstudio.engine.single_file import describe, load_single_file
from tests.engine._ldm_fixtures import write_single_file

SECRET = "sdstudio-secret-marker-7f3a"


def _with_metadata(src: Path, dest: Path, raw: str) -> Path:
    """``src`` with its embedded config replaced by ``raw`` (header rewritten, same tensors)."""
    data = src.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = {"format": "pt", CONFIG_METADATA_KEY: raw}
    new = json.dumps(header).encode()
    new += b" " * (-(8 + len(new)) % 8)
    dest.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n:])
    return dest


@pytest.fixture(scope="module")
def good(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hostile")
    single = write_single_file(tiny_models["sd1"], root / "tiny-sd1.safetensors")
    return single, embedded_config(tiny_models["sd1"])


def _attacks(victim: Path, secret_dir: Path) -> dict[str, Callable[[dict[str, Any]], None]]:
    def component(name: str) -> Callable[[dict[str, Any]], None]:
        def attack(cfg: dict[str, Any]) -> None:
            cfg["model_index"][name] = ["diffusers", "UNet2DConditionModel"]
            cfg[name] = {"_class_name": "UNet2DConditionModel", "payload": SECRET}
        return attack

    def vocab_ref(cfg: dict[str, Any]) -> None:
        cfg["tokenizer"] = {**cfg["tokenizer"], "vocab_ref": os.path.relpath(
            secret_dir, paths.resources_dir() / "tokenizers")}
        cfg["tokenizer"].pop("vocab.json", None)

    def vocab_abs(cfg: dict[str, Any]) -> None:
        cfg["tokenizer"] = {"vocab_ref": str(secret_dir)}

    def module(cfg: dict[str, Any]) -> None:
        cfg["model_index"]["unet"] = ["antigravity", "Fly"]

    def pipeline(cfg: dict[str, Any]) -> None:
        cfg["model_index"]["_class_name"] = "DiffusionPipeline"

    def auto_map(cfg: dict[str, Any]) -> None:
        cfg["text_encoder"] = {**cfg["text_encoder"], "auto_map": {"AutoModel": "evil.Model"}}

    def tokenizer_file(cfg: dict[str, Any]) -> None:
        cfg["tokenizer"] = {**cfg["tokenizer"], "tokenizer_config.json": {
            "vocab_file": str(secret_dir / "vocab.json"), "model_max_length": 77}}

    return {
        "absolute name": component(str(victim / "abs")),
        "../ name": component("../../../" + victim.name + "/up"),
        "tokenizer/../.. name": component("tokenizer/../../" + victim.name),
        "vocab_ref outside": vocab_ref,
        "vocab_ref absolute": vocab_abs,
        "library import": module,
        "custom pipeline": pipeline,
        "auto_map": auto_map,
        "tokenizer_config path": tokenizer_file,
    }


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("attack", list(_attacks(Path("v"), Path("s"))))
def test_hostile_embedded_config_writes_and_reads_nothing(
        attack: str, good: tuple[Path, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(home))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    secret = tmp_path / "secret"
    secret.mkdir()
    for f in ("vocab.json", "merges.txt"):
        (secret / f).write_text(json.dumps({SECRET: 1}) if f == "vocab.json" else SECRET)
    single, cfg = good
    cfg = json.loads(json.dumps(cfg))
    _attacks(victim, secret)[attack](cfg)
    hostile = _with_metadata(single, tmp_path / "hostile.safetensors", json.dumps(cfg))
    before = _tree(tmp_path)

    with pytest.raises(ModelError) as excinfo:
        load_single_file(hostile)
    assert "\n" not in str(excinfo.value)
    with pytest.raises(ModelError):
        materialize_config(cfg, tmp_path / "direct")
    after = _tree(tmp_path)
    assert after == before, "something was created or changed"
    assert not any(SECRET in p.read_text("utf-8", "replace") for p in home.rglob("*")
                   if p.is_file()), "a file outside was copied into SD Studio's folders"
    assert "antigravity" not in sys.modules


def test_describe_refuses_a_hostile_config_without_writing(
        good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    single, cfg = good
    cfg = json.loads(json.dumps(cfg))
    cfg["model_index"]["/abs"] = ["diffusers", "AutoencoderKL"]
    with pytest.raises(ModelError):
        describe(_with_metadata(single, tmp_path / "h.safetensors", json.dumps(cfg)))


def test_deeply_nested_embedded_config_is_refused_cleanly(
        good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    single, _ = good
    raw = '{"model_index": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ModelError, match="not valid JSON"):
        load_single_file(_with_metadata(single, tmp_path / "deep.safetensors", raw))


def test_the_real_embedded_configs_pass(good: tuple[Path, dict[str, Any]],
                                        tiny_models: dict[str, Path]) -> None:
    for kind in ("sd1", "sd1-inpaint", "sd2-v", "sdxl"):
        cfg = embedded_config(tiny_models[kind])
        assert check_embedded_config(cfg, kind) == cfg


def test_model_folder_naming_a_module_is_refused_before_import(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "folder-model"
    shutil.copytree(tiny_models["sd1"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["antigravity", "Fly"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="antigravity"):
        check_diffusers_folder(folder)
    assert "antigravity" not in sys.modules
