"""The hires fix on the tiny models: both passes run on the loaded components, the result has
the target size, progress and previews cover both passes, cancel stops either, and the
second pass runs A1111's steps and noise."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import CancelledError, ModelError, RequestError
from sdstudio.core.events import ImageReady, Preview, Progress
from sdstudio.core.hires import second_pass_steps
from sdstudio.core.request import GenerationRequest
from sdstudio.core.upscalers import LATENT_UPSCALE_MODES, LatentMode
from sdstudio.engine.hires import HiresPass, upscale_latents
from sdstudio.engine.ksampling import A1111Scheduler

Engines = Callable[[str], Any]
MakeRequest = Callable[..., GenerationRequest]


def _run(engine: Any, request: GenerationRequest,
         cancel: CancelToken | None = None) -> tuple[list[ImageReady], list[Any]]:
    events: list[Any] = []
    out = engine.generate(request, events.append, cancel)
    return out, events


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_both_passes_run_and_reach_the_factors_size(engines: Engines, make_request: MakeRequest,
                                                     upscaler: str) -> None:
    engine = engines("sd1")
    pipes_before = list(engine._model.pipes.pipes)
    request = make_request(hires=True, hires_upscaler=upscaler, hires_steps=2, batch_size=2)
    out, events = _run(engine, request)
    assert [o.image.size for o in out] == [(128, 128), (128, 128)]
    progress = [e for e in events if isinstance(e, Progress)]
    # 3 first-pass steps, then 2 hires steps (Euler a at 0.7: int(2 / 0.7) = 2, t_enc 1)
    assert [(p.step, p.total) for p in progress] == [(i, 5) for i in range(1, 6)]
    assert [p.phase_text for p in progress] == [
        "first pass 1/3", "first pass 2/3", "first pass 3/3", "hires 1/2", "hires 2/2"]
    previews = [e for e in events if isinstance(e, Preview)]
    assert [p.step for p in previews] == [1, 2, 3, 4, 5]
    assert previews[0].image.size == (8, 8) and previews[-1].image.size == (16, 16)
    notes = out[0].info.notes
    assert any(n.startswith(f"hires fix: 64x64 -> 128x128 with {upscaler}") for n in notes)
    # the SAME loaded components: nothing reloaded, the image-to-image pipe shares the UNet
    assert engine._model.pipes.pipes[:len(pipes_before)] == pipes_before
    img2img = engine._model.pipes.get(out[0].request.mode.IMG2IMG)
    assert img2img.unet is engine._model.pipes.base.unet
    assert out[0].request.hires and out[0].request.seed == 42


def test_explicit_sizes_follow_a1111(engines: Engines, make_request: MakeRequest) -> None:
    engine = engines("sd1")
    both, _ = _run(engine, make_request(hires=True, hires_resize_x=128, hires_resize_y=96,
                                        hires_steps=1, hires_denoising=0.5))
    assert both[0].image.size == (128, 96)  # upscaled to cover 128x128, cropped to 128x96
    one, _ = _run(engine, make_request(width=64, height=96, hires=True, hires_resize_x=128,
                                       hires_upscaler="Nearest", hires_steps=1))
    assert one[0].image.size == (128, 192)  # the height follows the aspect


def test_zero_hires_steps_runs_the_first_pass_steps(engines: Engines,
                                                    make_request: MakeRequest) -> None:
    engine = engines("sd1")
    request = make_request(steps=4, sampler="Euler", hires=True, hires_denoising=0.5)
    out, events = _run(engine, request)
    hires = [e for e in events if isinstance(e, Progress) and e.phase == "hires"]
    assert [p.phase_step for p in hires] == [1, 2, 3, 4]  # 0 = the first pass's 4 steps
    # A1111's setup_img2img_steps with the steps given: int(4 / 0.5) = 8, the last 4 run
    scheduler = engine._model.schedulers["Euler/Automatic"]
    full = scheduler.sigmas_for(8)  # the whole 8-step schedule
    assert second_pass_steps(4, 0, 0.5) == (8, 3)
    assert torch.equal(scheduler.run_sigmas, full[8 - 3 - 1:])
    assert out[0].image.size == (128, 128)


def test_the_hires_sampler_schedule_and_prompt_are_used(engines: Engines,
                                                        make_request: MakeRequest) -> None:
    engine = engines("sd1")
    request = make_request(sampler="Euler a", hires=True, hires_sampler="DPM++ 2M",
                           hires_schedule_type="Karras", hires_steps=3,
                           hires_prompt="a photo of a dog", hires_negative_prompt="blurry")
    out, events = _run(engine, request)
    assert out[0].image.size == (128, 128)
    karras = engine._model.schedulers["DPM++ 2M/Karras"]
    _, t_enc = second_pass_steps(3, 3, 0.7)
    assert len(karras.run_sigmas) == t_enc + 2  # its last t_enc + 1 steps ran
    assert [e.phase_step for e in events if isinstance(e, Progress) and e.phase == "hires"] \
        == [1, 2, 3]
    assert "then DPM++ 2M (Karras)" in " ".join(out[0].info.notes)


def test_the_second_pass_noise_is_a1111s(engines: Engines, make_request: MakeRequest,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A1111 draws the hires noise from a fresh ImageRNG of the image's seed at the
    target's latent size; the step noise continues those generators."""
    engine = engines("sd1")
    seen: list[dict[str, Any]] = []
    original = A1111Scheduler.prepare

    def spy(self: A1111Scheduler, *args: Any, **kw: Any) -> None:
        seen.append(kw)
        original(self, *args, **kw)

    monkeypatch.setattr(A1111Scheduler, "prepare", spy)
    _run(engine, make_request(seed=7, hires=True, hires_steps=2))
    second = seen[-1]
    expected = torch.randn((4, 16, 16), generator=torch.Generator("cpu").manual_seed(7))
    assert second["t_enc"] == 1 and second["strength"] == pytest.approx(0.7)
    assert torch.equal(second["noise"][0], expected)


@pytest.mark.parametrize("phase", ["first pass", "hires"])
def test_cancel_stops_either_pass(engines: Engines, make_request: MakeRequest,
                                  phase: str) -> None:
    engine = engines("sd1")
    cancel = CancelToken()
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, Progress) and event.phase == phase and event.phase_step == 1:
            cancel.cancel()

    with pytest.raises(CancelledError):
        engine.generate(make_request(hires=True, hires_upscaler="Lanczos", hires_steps=3),
                        on_event, cancel)
    steps = [e.phase_text for e in events if isinstance(e, Progress)]
    assert steps[-1] == f"{phase} 1/3"
    assert not any(isinstance(e, ImageReady) for e in events)
    out, _ = _run(engine, make_request(hires=True, hires_steps=1))  # the engine still works
    assert out[0].image.size == (128, 128)


def test_memory_policy_decides_for_the_target(engines: Engines, make_request: MakeRequest,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engines("sd1")
    sizes: list[tuple[int, int]] = []
    original = engine._plan

    def spy(choice: Any, model_bytes: int, width: int, height: int, *args: Any,
            **kw: Any) -> Any:
        sizes.append((width, height))
        return original(choice, model_bytes, width, height, *args, **kw)

    monkeypatch.setattr(engine, "_plan", spy)
    _run(engine, make_request(hires=True, hires_scale=1.5, hires_steps=1))
    assert sizes == [(96, 96)]


def test_bad_hires_input_is_one_line_before_any_work(engines: Engines,
                                                     make_request: MakeRequest) -> None:
    engine = engines("sd1")
    cases = [
        (dict(hires_scale=0.0), RequestError, "hires upscale must be between 1 and 8, not 0"),
        (dict(hires_scale=100.0), RequestError, "hires upscale must be between 1 and 8"),
        (dict(hires_resize_x=8192, hires_resize_y=8192), RequestError,
         "the hires target 8192x8192 is too large"),
        (dict(hires_upscaler="no-such-model"), ModelError, "no-such-model"),
        (dict(hires_upscaler="../../etc/passwd"), ModelError, ""),
        (dict(hires_sampler="DDIM", hires_steps=1), RequestError,
         "the hires pass runs no step of DDIM"),
    ]
    for changes, error, text in cases:
        events: list[Any] = []
        with pytest.raises(error) as info:
            engine.generate(make_request(hires=True, **changes), events.append)
        assert text in str(info.value) and "\n" not in str(info.value), changes
        assert not any(isinstance(e, Progress) for e in events), changes


def test_hires_is_ignored_in_image_to_image(engines: Engines, make_request: MakeRequest,
                                            input_images: dict[str, Path]) -> None:
    """As in A1111, where the hires fix belongs to txt2img only."""
    engine = engines("sd1")
    out, events = _run(engine, make_request(init_image=str(input_images["init"]),
                                            hires=True, strength=0.5))
    assert out[0].image.size == (64, 64)
    assert not out[0].request.hires  # what ran
    assert all(not e.phase for e in events if isinstance(e, Progress))


def test_an_inpainting_model_is_refused(engines: Engines, make_request: MakeRequest) -> None:
    with pytest.raises(RequestError, match="inpainting model"):
        engines("sd1-inpaint").generate(make_request("sd1-inpaint", hires=True))


def test_hires_on_sdxl(engines: Engines, make_request: MakeRequest) -> None:
    out, _ = _run(engines("sdxl"), make_request("sdxl", hires=True, hires_steps=1))
    assert out[0].image.size == (128, 128)


@pytest.mark.parametrize("name", list(LATENT_UPSCALE_MODES))
def test_latent_upscale_is_a1111s_interpolate(name: str) -> None:
    from sdstudio.core.hires import hires_target

    latents = torch.randn(2, 4, 8, 12)
    mode = LATENT_UPSCALE_MODES[name]
    target = hires_target(96, 64, 1.5)
    got = upscale_latents(latents, target, mode)
    want = torch.nn.functional.interpolate(latents, size=(12, 18), mode=mode.mode,
                                           antialias=mode.antialias)
    assert torch.equal(got, want)
    cropped = upscale_latents(latents, hires_target(96, 64, 2, 128, 128),
                              LatentMode("bilinear", False))
    assert cropped.shape == (2, 4, 16, 16)  # 192x128 covers 128x128: 8 columns cropped


def test_a_pass_is_made_only_for_txt2img_hires(engines: Engines,
                                               make_request: MakeRequest) -> None:
    engine = engines("sd1")
    loaded = engine._model
    scheduler = engine._scheduler(loaded, "Euler a", "Automatic")
    assert HiresPass.create(engine, loaded, make_request(), scheduler, None,
                            lambda s, t: scheduler) is None


def test_an_upscaler_model_from_the_folders(engines: Engines, make_request: MakeRequest,
                                            tmp_path: Path) -> None:
    """A pixel upscaler model (a random-weight Real-ESRGAN compact) found by name in the
    upscaler folders: decode, upscale, encode, second pass."""
    from sdstudio.engine.tiny_upscalers import build_upscaler

    folder = tmp_path / "upscalers"
    folder.mkdir()
    build_upscaler(folder / "tiny-x2.safetensors", "compact", scale=2)
    engine = engines("sd1")
    old = engine.settings
    engine.configure(dataclasses.replace(old, upscaler_dirs=(str(folder),)))
    try:
        out, events = _run(engine, make_request(hires=True, hires_upscaler="tiny-x2",
                                                hires_resize_x=96, hires_steps=1))
    finally:
        engine.configure(old)
    assert out[0].image.size == (96, 96)
    notes = " ".join(out[0].info.notes)
    assert "with tiny-x2" in notes and "hires upscaler: " in notes
    assert [e.phase_text for e in events if isinstance(e, Progress)][-1] == "hires 1/1"
