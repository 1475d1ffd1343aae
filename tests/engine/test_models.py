"""Model resolution and architecture detection from the folder itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine
from sdstudio.engine.hashing import file_sha256, folder_sha256
from sdstudio.engine.models import detect_arch, resolve


@pytest.mark.parametrize("kind", ["sd1", "sd1-inpaint", "sd2", "sd2-v", "sdxl"])
def test_detect_arch(kind: str, tiny_models: dict[str, Path]) -> None:
    assert detect_arch(tiny_models[kind]) == kind


def test_detection_ignores_the_folder_name(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_models["sd2-v"], tmp_path / "sdxl-inpaint-v1-5")
    assert detect_arch(copy) == "sd2-v"


def test_resolve_name_in_model_dirs(tiny_model: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "models" / "mine")
    settings = EngineSettings(model_dirs=(str(tmp_path / "models"),))
    source = resolve("mine", settings)
    assert source.kind == "folder" and source.path.name == "mine"
    with pytest.raises(ModelError, match="not found in the model folders"):
        resolve("other", settings)


def test_default_model_setting(tiny_models: dict[str, Path]) -> None:
    settings = EngineSettings(default_model=str(tiny_models["sd2-v"]))
    assert resolve("", settings).path == tiny_models["sd2-v"].resolve()


def test_single_file_hook(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    source = resolve(str(file), EngineSettings())
    assert source.kind == "file"
    try:
        import sdstudio.engine.single_file  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="not supported yet"):
            Engine().load(str(file))


def test_folder_hash_is_stable_and_cached(tiny_model: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert folder_sha256(copy) == folder_sha256(tiny_model)
    weights = copy / "vae" / "diffusion_pytorch_model.safetensors"
    first = file_sha256(weights)
    from sdstudio.core import paths

    cache = json.loads((paths.cache_dir() / "hashes.json").read_text())
    assert cache[str(weights.resolve())]["sha256"] == first
    weights.write_bytes(weights.read_bytes() + b" ")  # size/mtime change -> recomputed
    assert file_sha256(weights) != first


def test_switching_models_reloads_and_same_model_does_not(tiny_models: dict[str, Path]) -> None:
    from sdstudio.core.request import GenerationRequest

    eng = Engine()
    events: list[object] = []
    req = GenerationRequest("x", width=64, height=64, steps=1, seed=1,
                            model=str(tiny_models["sd1"]))
    eng.generate(req, events.append)
    eng.generate(req, events.append)
    from sdstudio.core.events import ModelReady

    assert len([e for e in events if isinstance(e, ModelReady)]) == 1
    out = eng.generate(req.replace(model=str(tiny_models["sd2-v"])), events.append)
    assert len([e for e in events if isinstance(e, ModelReady)]) == 2
    assert out[0].info.model_arch == "sd2-v"
    eng.unload()
