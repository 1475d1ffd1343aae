"""Engine test helpers: one loaded Engine per tiny model kind, shared by the engine tests,
and small input images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.core.request import GenerationRequest

# Tiny models: one thread is as fast as two and does not thrash when the cores are shared.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def engines(tiny_models: dict[str, Path]) -> Iterator[Callable[[str], object]]:
    from sdstudio.engine import Engine

    made: dict[str, Engine] = {}

    def get(kind: str) -> Engine:
        if kind not in made:
            made[kind] = Engine()
            made[kind].load(str(tiny_models[kind]))
        return made[kind]

    yield get
    for eng in made.values():
        eng.unload()


@pytest.fixture(scope="session")
def make_request(tiny_models: dict[str, Path]) -> Callable[..., GenerationRequest]:
    def make(kind: str = "sd1", **kw: object) -> GenerationRequest:
        base: dict[str, object] = dict(prompt="a photo of a cat", width=64, height=64, steps=3,
                                       seed=42, model=str(tiny_models[kind]))
        base.update(kw)
        return GenerationRequest(**base)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def input_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.RandomState(0)
    init = Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))
    init.save(root / "init.png")
    wide = Image.fromarray((rng.rand(48, 96, 3) * 255).astype(np.uint8))
    wide.save(root / "wide.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    mask.save(root / "mask.png")
    mask.resize((32, 32)).save(root / "mask32.png")
    return {"init": root / "init.png", "mask": root / "mask.png", "wide": root / "wide.png",
            "mask32": root / "mask32.png"}
