"""Out of memory is survived: the engine frees memory and makes the same image again with the
next saver (VAE tiling, attention slicing, model CPU offload, sequential offload), records the
fallback in the image's metadata and tells the window; only when every saver is on is it an
error. The OOM is injected (no GPU needed); offloading, which needs CUDA, is recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sdstudio.core.errors import OutOfMemoryError
from sdstudio.core.events import EngineEvent, Notice
from sdstudio.core.request import GenerationRequest
from sdstudio.engine import Engine, memory
from sdstudio.engine import runner as runner_module
from sdstudio.engine.memory import MemoryPlan, next_fallback


@pytest.fixture
def engine(tiny_models: dict[str, Path]) -> Iterator[Engine]:
    eng = Engine()
    eng.load(str(tiny_models["sd1"]))
    yield eng
    eng.unload()


def _request(tiny_models: dict[str, Path], **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=7,
                             model=str(tiny_models["sd1"]), **kw)


def _oom_times(n: int, real: Callable[..., Any]) -> Callable[..., Any]:
    left = [n]

    def fake(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    return fake


def test_next_fallback_order() -> None:
    plan: MemoryPlan | None = MemoryPlan()
    names = []
    while (step := next_fallback(plan, "cuda")) is not None:  # type: ignore[arg-type]
        plan, label = step
        names.append(label)
    assert names == ["VAE tiling", "attention slicing", "model CPU offload",
                     "sequential CPU offload"]
    assert plan is not None and plan.sequential_offload and not plan.cpu_offload
    cpu = next_fallback(MemoryPlan(vae_tiling=True, attention_slicing=True), "cpu")
    assert cpu is None  # offloading applies to CUDA only


@pytest.mark.parametrize("stage", ["denoise", "decode"])
def test_one_oom_is_retried_with_vae_tiling(stage: str, engine: Engine,
                                             tiny_models: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    request = _request(tiny_models)
    baseline = np.asarray(engine.generate(request)[0].image)
    if stage == "denoise":
        monkeypatch.setattr(Engine, "_call", staticmethod(_oom_times(1, Engine._call)))
    else:
        monkeypatch.setattr(runner_module, "decode_latents",
                            _oom_times(1, runner_module.decode_latents))
    events: list[EngineEvent] = []
    out = engine.generate(request, events.append)
    assert len(out) == 1
    info = out[0].info
    assert info.memory["vae_tiling"] is True
    assert any("tried again with VAE tiling" in n for n in info.notes)
    assert [e.message for e in events if isinstance(e, Notice)] == [
        "out of memory on cpu: tried again with VAE tiling"]
    assert np.array_equal(np.asarray(out[0].image), baseline)  # the same image


def test_every_cuda_fallback_then_an_error(engine: Engine, tiny_models: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    pipe_cls = type(engine._model.pipes.base)  # type: ignore[union-attr]
    monkeypatch.setattr(pipe_cls, "enable_model_cpu_offload",
                        lambda self, device=None: calls.append("model"), raising=False)
    monkeypatch.setattr(pipe_cls, "enable_sequential_cpu_offload",
                        lambda self, device=None: calls.append("sequential"), raising=False)
    monkeypatch.setattr(pipe_cls, "remove_all_hooks", lambda self: None, raising=False)
    monkeypatch.setattr(runner_module, "next_fallback",
                        lambda plan, kind: memory.next_fallback(plan, "cuda"))
    monkeypatch.setattr(Engine, "_call", staticmethod(_oom_times(4, Engine._call)))
    events: list[EngineEvent] = []
    out = engine.generate(_request(tiny_models), events.append)
    assert calls == ["model", "sequential"]
    notices = [e.message.rsplit("with ", 1)[1] for e in events if isinstance(e, Notice)]
    assert notices == ["VAE tiling", "attention slicing", "model CPU offload",
                       "sequential CPU offload"]
    assert out[0].info.memory["sequential_offload"] is True
    monkeypatch.setattr(Engine, "_call", staticmethod(_oom_times(99, Engine._call)))
    with pytest.raises(OutOfMemoryError) as excinfo:
        engine.generate(_request(tiny_models))
    assert "even with every memory saver" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
