"""Cancellation, previews, progress and out-of-memory handling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError, OutOfMemoryError
from sdstudio.core.events import ImageReady, Preview, Progress


def _count_decodes(monkeypatch: pytest.MonkeyPatch, eng: Any) -> list[int]:
    vae = eng._model.pipes.base.vae
    calls: list[int] = []
    original = vae.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", counting)
    return calls


def test_cancel_stops_within_one_step_without_decode(engines: Callable[[str], Any],
                                                     make_request: Callable[..., Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    eng = engines("sd1")
    decodes = _count_decodes(monkeypatch, eng)
    token = CancelToken()
    events: list[object] = []

    def on_event(event: object) -> None:
        events.append(event)
        if isinstance(event, Progress) and event.step == 2:
            token.cancel()

    with pytest.raises(CancelledError):
        eng.generate(make_request(steps=10, batch_count=3), on_event, token)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == [1, 2]  # the step after the cancel never reports
    assert decodes == []
    assert not [e for e in events if isinstance(e, ImageReady)]
    # the engine stays usable
    monkeypatch.undo()
    assert len(eng.generate(make_request(steps=1))) == 1


def test_cancel_before_start(engines: Callable[[str], Any],
                             make_request: Callable[..., Any]) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        engines("sd1").generate(make_request(), cancel=token)


@pytest.mark.parametrize(("every", "expected"), [(1, 4), (2, 2), (3, 1), (0, 0)])
def test_preview_every_n_steps(every: int, expected: int, engines: Callable[[str], Any],
                               make_request: Callable[..., Any]) -> None:
    eng = engines("sd1")
    old = eng.settings
    eng.configure(old.replace(preview_every=every))
    try:
        events: list[object] = []
        eng.generate(make_request(steps=4, sampler="Euler"), events.append)
    finally:
        eng.configure(old)
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == expected
    for p in previews:
        assert p.image.size == (8, 8) and p.image.mode == "RGB"
        assert p.step % every == 0


def test_out_of_memory_is_reported_and_engine_survives(engines: Callable[[str], Any],
                                                       make_request: Callable[..., Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    eng = engines("sd1")
    unet = eng._model.pipes.base.unet

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(unet, "forward", boom)
    with pytest.raises(OutOfMemoryError) as info:
        eng.generate(make_request())
    assert "lower the size" in str(info.value)
    monkeypatch.undo()
    assert len(eng.generate(make_request(steps=1))) == 1
