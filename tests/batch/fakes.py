"""A tiny fake engine with the Engine's ``generate`` signature, for fast runner tests."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from sdstudio.core.cancel import CancelToken
from sdstudio.core.events import EventCallback, ImageReady, Progress, ignore_event
from sdstudio.core.request import GenerationInfo, GenerationRequest


class FakeEngine:
    """Images are a colour derived from the seed; ``fail`` decides per request whether to
    raise (an exception instance) instead."""

    def __init__(self, fail: Callable[[GenerationRequest], BaseException | None] | None = None,
                 on_call: Callable[[GenerationRequest], None] | None = None) -> None:
        self.fail = fail
        self.on_call = on_call
        self.calls: list[GenerationRequest] = []
        self.loads = 0
        self.loaded_model: str | None = None

    def generate(self, request: GenerationRequest, on_event: EventCallback = ignore_event,
                 cancel: CancelToken | None = None) -> list[ImageReady]:
        self.calls.append(request)
        if self.on_call is not None:
            self.on_call(request)
        if cancel is not None:
            cancel.raise_if_cancelled()
        if self.loaded_model != request.model:
            self.loads += 1
            self.loaded_model = request.model
        if self.fail is not None:
            exc = self.fail(request)
            if exc is not None:
                raise exc
        out = []
        for i, seed in enumerate(request.seeds(request.seed)):
            on_event(Progress(1, 1))
            colour = (seed % 256, (seed // 256) % 256, (seed * 7) % 256)
            image = Image.new("RGB", (request.width // 8, request.height // 8), colour)
            one = request.replace(seed=seed, batch_size=1, batch_count=1)
            out.append(ImageReady(i, image, one, GenerationInfo(model_name="fake")))
        return out
