"""Engine basics on the tiny models: load, txt2img, events, seeds, demo model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdstudio.core.events import ImageReady, ModelReady, Preview, Progress
from sdstudio.core.request import GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine
from sdstudio.engine.tiny import build_tiny_model, ensure_demo_model, is_tiny_model


def _req(model: Path | str, **kw: object) -> GenerationRequest:
    base: dict[str, object] = dict(prompt="a photo of a cat", width=64, height=64, steps=3,
                                   seed=42, model=str(model))
    base.update(kw)
    return GenerationRequest(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    eng = Engine(EngineSettings())
    eng.load(str(tiny_model))
    return eng


def test_load_reports_model_ready(tiny_model: Path) -> None:
    events: list[object] = []
    eng = Engine()
    ready = eng.load(str(tiny_model), events.append)
    assert isinstance(ready, ModelReady) and ready in events
    assert ready.arch == "sd1" and ready.untrained and ready.dtype == "fp32"
    assert ready.device == "cpu" and "cpu_offload" in ready.memory
    assert eng.loaded is ready
    eng.unload()
    assert eng.loaded is None


def test_txt2img_events_and_info(engine: Engine, tiny_model: Path) -> None:
    events: list[object] = []
    out = engine.generate(_req(tiny_model, batch_size=2, batch_count=2), events.append)
    assert len(out) == 4
    assert [o.index for o in out] == [0, 1, 2, 3]
    assert [o.request.seed for o in out] == [42, 43, 44, 45]
    assert all(o.request.batch_size == 1 and o.request.batch_count == 1 for o in out)
    assert all(o.image.size == (64, 64) and o.image.mode == "RGB" for o in out)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.run for p in progress] == [1, 1, 1, 2, 2, 2]
    assert [p.step for p in progress] == [1, 2, 3, 1, 2, 3]
    assert all(p.total == 3 and p.runs == 2 for p in progress)
    assert len([e for e in events if isinstance(e, Preview)]) == 6
    assert [e for e in events if isinstance(e, ImageReady)] == out
    info = out[0].info
    assert info.model_untrained and info.model_arch == "sd1"
    assert len(info.model_sha256) == 64 and info.device == "cpu" and info.dtype == "fp32"
    assert info.scheduler["class"] == "A1111Scheduler" and info.scheduler["sampler"] == "Euler a"
    assert info.versions["diffusers"] and info.prompt_tokens == 5
    # the tiny model is random: images are noise, but not constant
    assert np.asarray(out[0].image).std() > 1


def test_same_seed_gives_identical_pixels(engine: Engine, tiny_model: Path) -> None:
    a = engine.generate(_req(tiny_model, seed=7))[0].image
    b = engine.generate(_req(tiny_model, seed=7))[0].image
    c = engine.generate(_req(tiny_model, seed=8))[0].image
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_batch_image_equals_single_image_of_its_seed(engine: Engine, tiny_model: Path) -> None:
    batch = engine.generate(_req(tiny_model, seed=100, batch_size=2, sampler="Euler"))
    single = engine.generate(_req(tiny_model, seed=101, sampler="Euler"))[0]
    diff = np.abs(np.asarray(batch[1].image, np.int16) - np.asarray(single.image, np.int16))
    assert diff.max() <= 1  # same noise; batched matmuls may round differently


def test_random_seed_is_recorded(engine: Engine, tiny_model: Path) -> None:
    out = engine.generate(_req(tiny_model, seed=-1, batch_count=2))
    seed = out[0].request.seed
    assert 0 <= seed < 2**32 and out[1].request.seed == (seed + 1) % 2**32
    again = engine.generate(_req(tiny_model, seed=out[1].request.seed))[0]
    assert again.image.tobytes() == out[1].image.tobytes()
    other = engine.generate(_req(tiny_model, seed=-1))[0]
    assert other.request.seed != seed  # 1 in 2**32 chance of a false failure


def test_demo_model_is_built_once_atomically(tmp_path: Path) -> None:
    folder = ensure_demo_model(tmp_path / "demo")
    assert is_tiny_model(folder)
    mtime = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path / "demo") == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tiny_build_is_deterministic(tmp_path: Path, tiny_model: Path) -> None:
    other = build_tiny_model(tmp_path / "again", "sd1")
    for rel in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                "vae/diffusion_pytorch_model.safetensors"):
        assert (other / rel).read_bytes() == (tiny_model / rel).read_bytes()


def test_empty_model_uses_demo(sdstudio_home: Path) -> None:
    eng = Engine()
    out = eng.generate(GenerationRequest("x", width=64, height=64, steps=1, seed=1))
    assert out[0].info.model_untrained
    assert "untrained" in out[0].info.model_name
    eng.unload()
