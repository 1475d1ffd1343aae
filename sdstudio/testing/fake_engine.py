"""A scriptable fake of ``sdstudio.engine.Engine`` (same methods, same events, no torch).

Used by the worker and window tests, and by ``SDSTUDIO_FAKE_ENGINE=1`` for UI work on a
machine without the engine's dependencies. Images are deterministic functions of the request:
a colour from the seed; img2img keeps the init image's shapes; inpaint changes only the mask.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import ImageInputError, ModelError
from sdstudio.core.events import (
    EventCallback,
    ImageReady,
    LoadProgress,
    ModelReady,
    Preview,
    Progress,
    VramUsage,
    ignore_event,
)
from sdstudio.core.request import GenerationInfo, GenerationRequest
from sdstudio.core.settings import EngineSettings


@dataclass
class FakeScript:
    """What the fake does; change it between calls (it is read at every call)."""

    step_delay: float = 0.0
    load_delay: float = 0.0
    load_steps: int = 4
    fail_models: set[str] = field(default_factory=set)  # models whose load raises ModelError
    fail_generate: BaseException | None = None  # raised once by the next generate
    on_step: Callable[[int], None] | None = None
    device: str = "cpu"
    dtype: str = "float32"
    memory: dict[str, object] = field(default_factory=lambda: {"mode": "off"})
    # GPU memory reported after a load and at every step, as the engine does on CUDA; a
    # callable gets the step number (0 for the load)
    vram: VramUsage | Callable[[int], VramUsage | None] | None = None

    def vram_at(self, step: int) -> VramUsage | None:
        return self.vram(step) if callable(self.vram) else self.vram


class FakeEngine:
    def __init__(self, settings: EngineSettings | None = None,
                 script: FakeScript | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.script = script or FakeScript()
        self.loaded: ModelReady | None = None
        self.loaded_model: str | None = None
        self.calls: list[tuple[str, Any]] = []

    def configure(self, settings: EngineSettings) -> None:
        self.calls.append(("configure", settings))
        self.settings = settings

    def load(self, model: str = "", on_event: EventCallback = ignore_event,
             cancel: CancelToken | None = None) -> ModelReady:
        self.calls.append(("load", model))
        script = self.script
        self.unload()
        target = model or self.settings.default_model
        for i in range(script.load_steps):
            if cancel is not None:
                cancel.raise_if_cancelled()
            on_event(LoadProgress(f"Loading part {i + 1}/{script.load_steps}",
                                  i / script.load_steps))
            if script.load_delay:
                time.sleep(script.load_delay / script.load_steps)
        if target in script.fail_models or (target and Path(target, "CORRUPT").exists()):
            raise ModelError(f"The model {Path(target).name!r} is damaged and cannot be loaded",
                             details="fake: unexpected end of the weights file")
        on_event(LoadProgress("Ready", 1.0))
        ready = ModelReady(
            name=Path(target).name if target else "sdstudio-demo-tiny",
            arch="sd1", device=script.device, dtype=script.dtype, memory=dict(script.memory),
            untrained=not target, load_s=script.load_delay, vram=script.vram_at(0),
        )
        self.loaded, self.loaded_model = ready, model
        on_event(ready)
        return ready

    def unload(self) -> None:
        self.loaded = None
        self.loaded_model = None

    def generate(self, request: GenerationRequest, on_event: EventCallback = ignore_event,
                 cancel: CancelToken | None = None) -> list[ImageReady]:
        from PIL import Image, ImageFilter

        self.calls.append(("generate", request))
        request = request.validated()
        script = self.script
        if script.fail_generate is not None:
            exc, script.fail_generate = script.fail_generate, None
            raise exc
        if self.loaded is None or self.loaded_model != request.model:
            self.load(request.model, on_event, cancel)
        assert self.loaded is not None
        seed = request.seed if request.seed >= 0 else random.randrange(2**32)
        init = mask = None
        if request.init_image:
            try:
                init = Image.open(request.init_image).convert("RGB").resize(
                    (request.width, request.height))
            except OSError as exc:
                raise ImageInputError(f"Cannot read the init image: {exc}") from exc
        if request.mask:
            mask = Image.open(request.mask).convert("L").resize((request.width, request.height))
            if request.mask_blur:
                mask = mask.filter(ImageFilter.GaussianBlur(request.mask_blur))
        out: list[ImageReady] = []
        started = time.perf_counter()
        index = 0
        for run in range(request.batch_count):
            for step in range(1, request.steps + 1):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if script.step_delay:
                    time.sleep(script.step_delay)
                if script.on_step is not None:
                    script.on_step(step)
                elapsed = time.perf_counter() - started
                on_event(Progress(step, request.steps, run + 1, request.batch_count, elapsed,
                                  elapsed / max(1, step + run * request.steps),
                                  vram=script.vram_at(step)))
                if self.settings.preview_every and step % self.settings.preview_every == 0:
                    shade = int(255 * step / request.steps)
                    on_event(Preview(step, request.steps,
                                     Image.new("RGB", (request.width // 8, request.height // 8),
                                               (shade, shade // 2, 255 - shade))))
            for _ in range(request.batch_size):
                s = (seed + index) % 2**32
                rng = random.Random(s)
                colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
                image = Image.new("RGB", (request.width, request.height), colour)
                if init is not None:
                    blended = Image.blend(init, image, request.strength * 0.5)
                    image = Image.composite(blended, init, mask) if mask is not None else blended
                info = GenerationInfo(
                    model_name=self.loaded.name, model_arch="sd1",
                    model_untrained=self.loaded.untrained, device=script.device,
                    dtype=script.dtype, elapsed_s=time.perf_counter() - started,
                )
                event = ImageReady(index, image,
                                   request.replace(seed=s, batch_size=1, batch_count=1), info)
                on_event(event)
                out.append(event)
                index += 1
        return out


def fake_engine_factory(script: FakeScript | None = None,
                        created: list[FakeEngine] | None = None
                        ) -> Callable[[EngineSettings], FakeEngine]:
    """A factory for ``JobQueue(engine_factory=...)``; engines it makes are appended to
    ``created`` so a test can inspect them."""

    def factory(settings: EngineSettings) -> FakeEngine:
        engine = FakeEngine(settings, script)
        if created is not None:
            created.append(engine)
        return engine

    return factory
