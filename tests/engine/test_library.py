"""Model folders: scanning single files and diffusers folders, background hashing with a
cache keyed by (path, size, mtime), name resolution, and ``sdstudio models``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core import paths
from sdstudio.core.errors import ModelError
from sdstudio.engine import hashing, library
from tests.engine._ldm_fixtures import write_single_file


@pytest.fixture(scope="module")
def model_dir(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_single_file(tiny_models["sd1"], root / "tiny-sd1.safetensors")
    (root / "xl").mkdir()
    write_single_file(tiny_models["sdxl"], root / "xl" / "tiny-xl.safetensors")
    shutil.copytree(tiny_models["sd2-v"], root / "folder-sd2v")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)},
              str(root / "stray-lora.safetensors"))
    (root / "notes.txt").write_text("not a model")
    (root / "broken.safetensors").write_bytes(b"\x00" * 5)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scan_lists_models_with_arch_and_size(model_dir: Path) -> None:
    entries = {e.name: e for e in library.scan([model_dir])}
    assert set(entries) == {"tiny-sd1", "xl/tiny-xl", "folder-sd2v", "stray-lora", "broken"}
    sd1 = entries["tiny-sd1"]
    assert (sd1.kind, sd1.arch, sd1.problem) == ("single-file", "sd1", "")
    assert sd1.size_bytes == (model_dir / "tiny-sd1.safetensors").stat().st_size
    assert entries["xl/tiny-xl"].arch == "sdxl"
    folder = entries["folder-sd2v"]
    assert (folder.kind, folder.arch) == ("diffusers", "sd2-v")
    assert "LoRA" in entries["stray-lora"].problem
    assert entries["broken"].problem and entries["broken"].arch == "?"


def test_hashes_in_background_and_cached(model_dir: Path) -> None:
    cache = paths.cache_dir() / "hashes.json"
    entries = library.scan([model_dir])
    got: list[library.ModelEntry] = []
    with library.HashJob(entries, on_hash=got.append) as job:
        done = {e.name: e for e in job.wait()}
    sd1 = model_dir / "tiny-sd1.safetensors"
    assert done["tiny-sd1"].short_hash == _sha(sd1)[:10]
    assert done["folder-sd2v"].short_hash == hashing.folder_sha256(model_dir / "folder-sd2v")[:10]
    assert done["stray-lora"].short_hash is None  # not a model: not hashed
    assert {e.name for e in got} == {"tiny-sd1", "xl/tiny-xl", "folder-sd2v"}
    assert str(sd1.resolve()) in json.loads(cache.read_text())
    # a new scan reports the cached hashes at once
    again = {e.name: e for e in library.scan([model_dir])}
    assert again["tiny-sd1"].short_hash == _sha(sd1)[:10]
    assert again["folder-sd2v"].short_hash == done["folder-sd2v"].short_hash


def test_cache_is_invalidated_by_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(3)}, str(path))
    first = library.hash_all(library.scan([tmp_path], with_arch=False))[0].short_hash
    save_file({"model.diffusion_model.x": torch.ones(3)}, str(path))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert library.scan([tmp_path], with_arch=False)[0].short_hash is None
    second = library.hash_all(library.scan([tmp_path], with_arch=False))[0].short_hash
    assert first != second == _sha(path)[:10]


def test_resolve_model_name(model_dir: Path) -> None:
    dirs = [str(model_dir)]
    assert library.resolve_model_name("tiny-sd1", dirs) == (model_dir / "tiny-sd1.safetensors"
                                                             ).resolve()
    assert library.resolve_model_name("TINY-SD1.safetensors", dirs) is not None
    assert library.resolve_model_name("xl/tiny-xl", dirs) == (
        model_dir / "xl" / "tiny-xl.safetensors").resolve()
    assert library.resolve_model_name("tiny-xl", dirs) is not None
    assert library.resolve_model_name("folder-sd2v", dirs) == (model_dir / "folder-sd2v"
                                                                ).resolve()
    short = _sha(model_dir / "tiny-sd1.safetensors")[:10]
    assert library.resolve_model_name(short, dirs) == (model_dir / "tiny-sd1.safetensors"
                                                        ).resolve()
    assert library.resolve_model_name("nope", dirs) is None
    with pytest.raises(ModelError, match="not found"):
        library.require_model("nope", dirs)


def test_engine_loads_a_model_by_name(model_dir: Path) -> None:
    from sdstudio.core.settings import EngineSettings
    from sdstudio.engine import Engine

    engine = Engine(EngineSettings(model_dirs=(str(model_dir),)))
    ready = engine.load("tiny-sd1")
    assert ready.arch == "sd1"
    engine.unload()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "sdstudio", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_models_command(model_dir: Path) -> None:
    proc = _cli("models", str(model_dir), "--hash")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "sd1" in lines["tiny-sd1"] and _sha(model_dir / "tiny-sd1.safetensors")[:10] in (
        lines["tiny-sd1"])
    assert "sdxl" in lines["xl/tiny-xl"] and "diffusers" in lines["folder-sd2v"]
    proc = _cli("models", str(model_dir), "--json")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["name"] for r in records} >= {"tiny-sd1", "folder-sd2v"}
    assert "torch" not in _cli("models", str(model_dir), "--json").stderr


def test_models_command_errors(tmp_path: Path) -> None:
    proc = _cli("models", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
