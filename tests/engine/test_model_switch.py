"""Switching models frees the previous one: no pipeline survives a switch, and switching back
and forth ten times does not grow resident memory by more than one model's worth. Also: a hub
id fails at once when offline."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
import weakref
from pathlib import Path

import pytest

from sdstudio.core.errors import ModelError
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _settle() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def test_switching_models_frees_the_previous_one(tiny_models: dict[str, Path]) -> None:
    a, b = tiny_models["sd1"], tiny_models["sdxl"]
    engine = Engine(EngineSettings(checkpoint_cache=0))  # nothing kept in RAM (model_cache)
    engine.load(str(a))
    first = weakref.ref(engine._model.pipes.base.unet)  # type: ignore[union-attr]
    engine.load(str(b))
    _settle()
    assert first() is None, "the previous model's UNet is still referenced after a switch"

    engine.load(str(a))  # warm up allocator pools and lazy imports
    engine.load(str(b))
    _settle()
    before = _rss()
    for i in range(10):  # ten switches: a, b, a, b, ...
        engine.load(str(a if i % 2 == 0 else b))
    _settle()
    growth = _rss() - before
    one_model = max(_weights_bytes(a), _weights_bytes(b))
    engine.unload()
    assert growth < one_model, f"RSS grew by {growth / 2**20:.1f} MiB over 10 switches " \
                               f"(one model is {one_model / 2**20:.1f} MiB)"


@pytest.mark.parametrize("ref", ["someorg/some-model", "stabilityai/not-cached-here"])
def test_hub_id_fails_at_once_offline(ref: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = Engine(EngineSettings())
    started = time.monotonic()
    with pytest.raises(ModelError) as err:
        engine.load(ref)
    assert time.monotonic() - started < 2.0
    assert ref in str(err.value) and "\n" not in str(err.value)
