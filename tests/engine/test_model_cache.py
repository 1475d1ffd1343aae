"""Models kept in RAM between switches (engine/model_cache.py): the decisions as pure
functions, and the engine switching A -> B -> A without reading A again, giving the same
images as a cold load, with nothing of the earlier request (LoRA, VAE, embeddings) left."""

from __future__ import annotations

import gc
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine, lora, model_cache, models
from sdstudio.engine.model_cache import AUTO, MAX_CACHED, MEMORY_MARGIN, capacity, evictions
from tests.engine._ldm_fixtures import kohya_lora

GiB = 2**30


# ------------------------------------------------------------------------------ decisions
def test_capacity_follows_the_setting_and_the_memory() -> None:
    assert capacity(0, 100 * GiB, 4 * GiB) == 0
    assert capacity(3, 1 * GiB, 4 * GiB) == 3  # asked for: memory pressure still evicts
    assert capacity(1000, 100 * GiB, 4 * GiB) == MAX_CACHED
    assert capacity(AUTO, 4 * GiB + MEMORY_MARGIN, 4 * GiB) == 1
    assert capacity(AUTO, 4 * GiB + MEMORY_MARGIN - 1, 4 * GiB) == 0
    assert capacity(AUTO, 100 * GiB, 0) == 0
    assert capacity(-7, 100 * GiB, 4 * GiB) == 1  # any negative number means automatic


def test_evictions_are_least_recently_used_first() -> None:
    sizes = [4 * GiB, 2 * GiB, 4 * GiB]  # oldest first
    plenty = 100 * GiB
    assert evictions(sizes, 3, plenty) == 0
    assert evictions(sizes, 1, plenty) == 2
    assert evictions(sizes, 0, plenty) == 3
    # memory short of the margin: the oldest go until what they give back covers it
    assert evictions(sizes, 3, MEMORY_MARGIN - GiB) == 1
    assert evictions(sizes, 3, MEMORY_MARGIN - 5 * GiB) == 2
    assert evictions(sizes, 3, MEMORY_MARGIN, needed=3 * GiB) == 1
    assert evictions(sizes, 3, 0, needed=100 * GiB) == 3
    assert evictions([], 2, 0) == 0


def test_cache_keys_follow_the_file_and_how_it_was_loaded(tmp_path: Path) -> None:
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x" * 10)
    key = model_cache.cache_key("m", f, "cpu", torch.float32)
    assert key == model_cache.cache_key("m", f, "cpu", torch.float32)
    assert key != model_cache.cache_key("m", f, "cpu", torch.bfloat16)
    os.utime(f, ns=(1, 1))
    assert key != model_cache.cache_key("m", f, "cpu", torch.float32)
    assert model_cache.cache_key("m", tmp_path / "gone", "cpu") == ""


def test_model_cache_order() -> None:
    cache = model_cache.ModelCache()
    for name in "abc":
        cache.put(name, name.upper(), 1)
    assert cache.take("b") == "B" and cache.keys() == ["a", "c"]
    cache.put("b", "B", 1)
    assert cache.trim(1, 100 * GiB) == ["A", "C"] and cache.keys() == ["b"]
    assert cache.take("zzz") is None and cache.clear() == ["B"] and len(cache) == 0


# ------------------------------------------------------------------------------ engine
@pytest.fixture(scope="module")
def copies(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Path]:
    """Four distinct model folders (copies of the tiny SD 1.x model)."""
    root = tmp_path_factory.mktemp("cache-models")
    return {name: Path(shutil.copytree(tiny_models["sd1"], root / name)) for name in "abcd"}


class _Spy:
    """Counts the loads that read model files (models.load_pipeline)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        real = models.load_pipeline

        def spy(source: models.ModelSource, *args: Any, **kwargs: Any) -> Any:
            self.paths.append(source.path)
            return real(source, *args, **kwargs)

        monkeypatch.setattr(models, "load_pipeline", spy)


def _pixels(engine: Engine, model: Path, prompt: str = "a lighthouse", **kw: Any) -> np.ndarray:
    req = GenerationRequest(prompt=prompt, width=64, height=64, steps=2, seed=7,
                            model=str(model), **kw)
    return np.asarray(engine.generate(req)[0].image)


def _plenty(monkeypatch: pytest.MonkeyPatch, available: int = 64 * GiB) -> None:
    monkeypatch.setattr(model_cache, "available_memory", lambda: available)


def test_switching_back_takes_the_model_from_ram(copies: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _plenty(monkeypatch)
    cold = Engine(EngineSettings(checkpoint_cache=0))
    expected = _pixels(cold, copies["a"])
    cold.unload()
    spy = _Spy(monkeypatch)
    engine = Engine(EngineSettings())  # automatic: one kept when memory allows
    first = _pixels(engine, copies["a"])
    unet = engine._model.pipes.base.unet  # type: ignore[union-attr]
    engine.load(str(copies["b"]))
    ready = engine.load(str(copies["a"]))
    assert spy.paths == [copies["a"].resolve(), copies["b"].resolve()]  # no second read of a
    assert engine._model.pipes.base.unet is unet  # type: ignore[union-attr]
    assert ready.name.startswith("a") and engine.loaded is ready
    again = _pixels(engine, copies["a"])
    assert np.array_equal(first, expected) and np.array_equal(again, expected)
    assert engine._cache.keys()[0].startswith(str(copies["b"].resolve()))
    engine.unload()
    assert len(engine._cache) == 0 and engine._model is None


def test_setting_zero_keeps_nothing(copies: dict[str, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _plenty(monkeypatch)
    spy = _Spy(monkeypatch)
    engine = Engine(EngineSettings(checkpoint_cache=0))
    engine.load(str(copies["a"]))
    first = weakref.ref(engine._model.pipes.base.unet)  # type: ignore[union-attr]
    engine.load(str(copies["b"]))
    gc.collect()
    assert first() is None and len(engine._cache) == 0
    engine.load(str(copies["a"]))
    assert len(spy.paths) == 3
    engine.unload()


def test_least_recently_used_is_freed_first(copies: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _plenty(monkeypatch)
    spy = _Spy(monkeypatch)
    engine = Engine(EngineSettings(checkpoint_cache=2))

    def kept() -> list[str]:
        return [Path(k.split("\n", 1)[0]).name for k in engine._cache.keys()]  # noqa: SIM118

    for name in "abc":
        engine.load(str(copies[name]))
    assert kept() == ["a", "b"]
    engine.load(str(copies["a"]))  # from RAM; c is kept now
    assert kept() == ["b", "c"]
    engine.load(str(copies["d"]))
    assert kept() == ["c", "a"]  # b was the least recently used
    assert [p.name for p in spy.paths] == ["a", "b", "c", "d"]
    engine.configure(engine.settings.replace(checkpoint_cache=1))
    assert kept() == ["a"]
    engine.configure(engine.settings.replace(checkpoint_cache=0))
    assert kept() == []
    engine.unload()


def test_memory_pressure_frees_kept_models(copies: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    available = [64 * GiB]
    monkeypatch.setattr(model_cache, "available_memory", lambda: available[0])
    engine = Engine(EngineSettings(checkpoint_cache=3))
    engine.load(str(copies["a"]))
    engine.load(str(copies["b"]))
    assert len(engine._cache) == 1
    available[0] = MEMORY_MARGIN // 2  # another program took the memory
    engine.generate(GenerationRequest(prompt="x", width=64, height=64, steps=1, seed=1,
                                      model=str(copies["b"])))
    assert len(engine._cache) == 0  # freed before the run
    available[0] = 64 * GiB
    engine.load(str(copies["a"]))
    assert len(engine._cache) == 1
    auto = Engine(EngineSettings())  # automatic: nothing kept without the room for it
    available[0] = MEMORY_MARGIN
    auto.load(str(copies["a"]))
    auto.load(str(copies["b"]))
    assert len(auto._cache) == 0
    for e in (engine, auto):
        e.unload()


def test_a_kept_model_comes_back_without_loras_vae_or_embeddings(
        copies: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import DiffusionPipeline

    _plenty(monkeypatch)
    ref = DiffusionPipeline.from_pretrained(copies["a"], local_files_only=True)
    lora_dir, emb_dir = tmp_path / "loras", tmp_path / "emb"
    lora_dir.mkdir()
    emb_dir.mkdir()
    save_file(kohya_lora(ref, seed=3, scale=2.0), str(lora_dir / "strong.safetensors"))
    save_file({"emb_params": torch.randn(3, 32, generator=torch.Generator().manual_seed(4))},
              str(emb_dir / "multivec.safetensors"))
    settings = EngineSettings(lora_dirs=(str(lora_dir),), embedding_dirs=(str(emb_dir),))
    cold = Engine(settings.replace(checkpoint_cache=0))
    expected = _pixels(cold, copies["a"], "a multivec lighthouse")
    with_lora = _pixels(cold, copies["a"], "a multivec lighthouse <lora:strong:1>")
    cold.unload()
    assert not np.array_equal(expected, with_lora)

    engine = Engine(settings)
    dressed = _pixels(engine, copies["a"], "a multivec lighthouse <lora:strong:1>",
                      vae=str(copies["c"] / "vae"))
    assert np.array_equal(dressed, with_lora)  # same weights in the other VAE
    base = engine._model.pipes.base  # type: ignore[union-attr]
    assert base.vae is not engine._model.original_vae  # type: ignore[union-attr]
    vocab = len(ref.tokenizer)
    assert len(base.tokenizer) > vocab  # the embedding's tokens
    engine.load(str(copies["b"]))
    engine.load(str(copies["a"]))
    model = engine._model
    assert model is not None and model.pipes.base is base
    assert base.vae is model.original_vae and model.vae_ref == ""
    assert not model.loras_active and lora.active_loras(base) == []
    assert len(base.tokenizer) == vocab
    assert base.text_encoder.get_input_embeddings().weight.shape[0] == vocab
    original = load_file(str(next((copies["a"] / "unet").glob("*.safetensors"))))
    state = base.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items())
    assert np.array_equal(_pixels(engine, copies["a"], "a multivec lighthouse"), expected)
    engine.unload()


def test_a_changed_file_is_read_again(copies: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _plenty(monkeypatch)
    spy = _Spy(monkeypatch)
    model = Path(shutil.copytree(copies["a"], tmp_path / "changing"))
    engine = Engine(EngineSettings(checkpoint_cache=1))
    engine.load(str(model))
    engine.load(str(copies["b"]))
    weights = next((model / "unet").glob("*.safetensors"))
    os.utime(weights, ns=(10**18, 10**18))
    engine.load(str(model))
    assert [p.name for p in spy.paths] == ["changing", "b", "changing"]
    engine.unload()


def test_pure_functions_ignore_a_missing_path(tmp_path: Path) -> None:
    assert model_cache.disk_bytes(tmp_path / "none") == 0
    assert model_cache.loaded_estimate(tmp_path, 4) == 0
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"0" * 100)
    assert model_cache.loaded_estimate(f, 4) == 200 and model_cache.loaded_estimate(f, 2) == 100



def test_bench_switch_arm_runs(copies: dict[str, Path]) -> None:
    """bench/load.py's switch arm on tiny models: a cold load, another, the first from RAM."""
    import sys

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import load  # type: ignore[import-not-found]

    out = load._child("switch", [str(copies["a"]), str(copies["b"])], 64)
    assert out["kept"] == 1 and out["cached_s"] < out["cold_s"]
