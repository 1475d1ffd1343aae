"""Contract: the fake engine (sdstudio.testing.fake_engine) behaves like sdstudio.engine.Engine.

Every case below runs the same steps (generate, load, unload, configure) through the real
engine on the tiny model and through the fake, from the same state, and requires for each
step the same outcome (success, or the same exception class; for a RequestError the same
field) and the same events in the same order. Events are compared by what the worker and the
window rely on:

- LoadProgress: its fraction; Notice: that there is one (the wording may differ);
- ModelReady: name, arch, untrained, device, dtype;
- Progress: step, total, run, runs; Preview: step, total, the preview's size;
- ImageReady: index, the request that reproduces it (seed included), the image's size, and
  the info's model name, arch, untrained flag, device and dtype.

Nothing is collapsed: how many Progress and Preview events the engine emits is a function of
the request (sampler, steps, strength) and the settings (preview_every), never of timing, so
the fake must reproduce the counts exactly. Random seeds (-1) are compared relative to the
job's first seed. Each case also states the outcomes it expects, so a refusal that both
engines stopped making fails here too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import RequestError
from sdstudio.core.events import (
    ImageReady,
    LoadProgress,
    ModelReady,
    Notice,
    Preview,
    Progress,
)
from sdstudio.core.request import MAX_SEED, SAMPLER_NAMES, GenerationRequest
from sdstudio.core.settings import EngineSettings
from sdstudio.testing.fake_engine import FakeEngine

BASE = EngineSettings(device="cpu", preview_every=1)  # the same device on every machine
REQUEST: dict[str, Any] = dict(prompt="a photo of a cat", width=64, height=64, steps=2, seed=42,
                               model="@tiny")
OK = "ok"


# ------------------------------------------------------------------------------ steps
EventTest = Callable[[object], bool]
CancelWhen = Callable[[], EventTest]  # a fresh test for each engine (a test may count)


@dataclass(frozen=True)
class Gen:
    """``engine.generate`` of REQUEST with ``changes``; "@name" values are input paths.
    ``cancel_when()(event)`` true cancels the token from inside the callback."""

    changes: dict[str, Any] = field(default_factory=dict)
    cancel_before: bool = False
    cancel_when: CancelWhen | None = None


@dataclass(frozen=True)
class Load:
    model: str = "@tiny"


@dataclass(frozen=True)
class Unload:
    pass


@dataclass(frozen=True)
class Configure:
    changes: dict[str, Any]


Step = Gen | Load | Unload | Configure


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    expect: tuple[str, ...]  # per step: OK or the exception class name
    cold: bool = False  # start with no model loaded (else: the tiny model is loaded)
    settings: dict[str, Any] = field(default_factory=dict)  # changes to BASE


def gen(*bases: dict[str, Any], **changes: Any) -> Gen:
    merged: dict[str, Any] = {}
    for base in (*bases, changes):
        merged.update(base)
    return Gen(merged)


def at_progress(run: int, step: int) -> CancelWhen:
    return lambda: lambda e: isinstance(e, Progress) and (e.run, e.step) == (run, step)


def at_image(index: int) -> CancelWhen:
    return lambda: lambda e: isinstance(e, ImageReady) and e.index == index


def at_model_ready() -> CancelWhen:
    return lambda: lambda e: isinstance(e, ModelReady)


def at_load_event(n: int) -> CancelWhen:
    """The n-th (1-based) LoadProgress of the step."""

    def make() -> EventTest:
        seen: list[object] = []

        def test(e: object) -> bool:
            if isinstance(e, LoadProgress):
                seen.append(e)
                return len(seen) == n
            return False

        return test

    return make


IMG2IMG = dict(init_image="@init", strength=0.7, steps=3)  # int(3 * 0.7) = 2 steps
INPAINT = dict(init_image="@init", mask="@mask", strength=0.7, steps=3)

CASES = [
    # ------------------------------------------------------------------ what runs
    Case("txt2img", (gen(),), (OK,)),
    Case("txt2img-cold", (gen(),), (OK,), cold=True),
    Case("img2img", (gen(IMG2IMG), gen(init_image="@init", strength=0.5, steps=3)),
         (OK, OK)),
    Case("img2img-resize-modes", (gen(init_image="@wide", resize_mode="crop", strength=1.0),
                                  gen(init_image="@wide", resize_mode="fill", strength=1.0),
                                  gen(init_image="@wide", strength=1.0)), (OK, OK, OK)),
    Case("inpaint", (gen(INPAINT), gen(INPAINT, mask_blur=0)), (OK, OK)),
    Case("inpaint-only-masked", (gen(init_image="@wide", mask="@wide_mask", strength=1.0,
                                     inpaint_only_masked=True, inpaint_padding=4),),
         (OK,)),
    Case("batch", (gen(batch_size=2, batch_count=2), gen(IMG2IMG, batch_size=2),
                   gen(INPAINT, batch_count=2)), (OK, OK, OK)),
    Case("random-seed", (gen(seed=-1, batch_size=2, batch_count=2),), (OK,)),
    Case("seed-wraps", (gen(seed=MAX_SEED, batch_size=2),), (OK,)),
    Case("samplers-txt2img", tuple(gen(sampler=s) for s in SAMPLER_NAMES),
         (OK,) * len(SAMPLER_NAMES)),
    Case("samplers-img2img", tuple(gen(IMG2IMG, sampler=s) for s in SAMPLER_NAMES),
         (OK,) * len(SAMPLER_NAMES)),
    # A1111's PLMS timesteps at 1 step give no step: refused, as it runs nothing
    Case("samplers-one-step", tuple(gen(steps=1, sampler=s) for s in ("PLMS", "Heun")),
         ("RequestError", OK)),
    Case("previews-off", (gen(), gen(IMG2IMG)), (OK, OK), settings=dict(preview_every=0)),
    Case("previews-every-2", (gen(steps=3), gen(steps=3, sampler="PLMS"),
                              gen(steps=3, sampler="Heun")), (OK, OK, OK),
         settings=dict(preview_every=2)),
    # ------------------------------------------------------------- what is refused
    Case("bad-requests", (gen(width=65), gen(height=32), gen(steps=0), gen(sampler="Nope"),
                          gen(seed=-2), gen(batch_size=0), gen(batch_count=0),
                          gen(cfg_scale=-1), gen(resize_mode="stretch"),
                          gen(mask="@mask"), gen(prompt="a cat <lora:x:heavy>"),
                          gen(IMG2IMG, strength=1.5)),
         ("RequestError",) * 12),
    Case("bad-requests-cold", (gen(width=65), gen(mask="@mask"), gen(sampler="Nope")),
         ("RequestError",) * 3, cold=True),
    Case("strength-runs-no-step", (gen(init_image="@init", strength=0.1, steps=3),
                                   gen(INPAINT, strength=0.2)),
         ("RequestError", "RequestError")),
    Case("bad-images", (gen(init_image="@missing"), gen(init_image="@not_image"),
                        gen(init_image="@init", mask="@missing"),
                        gen(init_image="@init", mask="@not_image"),
                        gen(init_image="@init", mask="@small_mask")),
         ("ImageInputError",) * 5),
    Case("bad-images-cold", (gen(init_image="@missing"), gen(INPAINT, mask="@small_mask")),
         ("ImageInputError",) * 2, cold=True),
    Case("model-not-found", (gen(model="@missing"), gen(model="no-such-model"),
                             gen(model="someone/no-such-model"), gen(model="@not_model"),
                             gen(model="@damaged"), gen()),
         ("ModelError",) * 5 + (OK,)),
    Case("model-not-found-cold", (gen(model="@missing"), gen(model="@damaged"), gen()),
         ("ModelError", "ModelError", OK), cold=True),
    Case("model-by-name", (gen(model="sd1"), gen(model="sd1"), gen(model="no-such-model")),
         (OK, OK, "ModelError"), settings=dict(model_dirs=("@models_dir",))),
    Case("default-model", (gen(model=""), gen(model="@tiny")), (OK, OK), cold=True,
         settings=dict(default_model="@tiny")),
    Case("demo-model", (gen(model=""), Load("")), (OK, OK), cold=True),
    Case("addons-not-found", (gen(prompt="a cat <lora:no-such-lora:0.5>"),
                              gen(vae="@missing"), gen(vae="no-such-vae")),
         ("ModelError",) * 3),
    Case("addons-not-found-cold", (gen(prompt="a cat <lora:no-such-lora>"),), ("ModelError",),
         cold=True),
    Case("load-unload", (Load(), Load("@missing"), gen(), Unload(), gen()),
         (OK, "ModelError", OK, OK, OK)),
    Case("configure-reloads", (Configure(dict(device="cuda:99")), gen(),  # no such GPU: Notice
                               Configure(dict(device="cpu", preview_every=0)), gen(), gen()),
         (OK,) * 5),
    # ------------------------------------------------------------------- cancel
    Case("cancel-before", (Gen(cancel_before=True), gen()), ("CancelledError", OK)),
    Case("cancel-before-cold", (Gen(cancel_before=True), gen()), ("CancelledError", OK),
         cold=True),
    Case("cancel-in-a-run", (Gen(dict(batch_count=2), cancel_when=at_progress(1, 1)),
                             Gen({**IMG2IMG, "batch_count": 2},
                                 cancel_when=at_progress(1, 2)),
                             gen()), ("CancelledError", "CancelledError", OK)),
    Case("cancel-between-runs", (Gen(dict(batch_size=2, batch_count=2),
                                     cancel_when=at_image(0)),
                                 Gen(dict(batch_count=3), cancel_when=at_progress(2, 2))),
         ("CancelledError",) * 2),
    # a cancel once the weights are in place leaves the model loaded: the next run loads nothing
    Case("cancel-while-loading",
         (*(Gen(cancel_when=at_load_event(n)) for n in (1, 2, 3, 4)), gen(), Unload(),
          Gen(cancel_when=at_model_ready()), gen()),
         ("CancelledError",) * 4 + (OK, OK, "CancelledError", OK), cold=True),
]


# ---------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def inputs(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("contract")
    rng = np.random.RandomState(0)
    Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8)).save(root / "init.png")
    Image.fromarray((rng.rand(48, 96, 3) * 255).astype(np.uint8)).save(root / "wide.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    mask.save(root / "mask.png")
    mask.resize((32, 32)).save(root / "small_mask.png")
    wide_mask = Image.new("L", (96, 48), 0)
    wide_mask.paste(255, (60, 10, 76, 26))
    wide_mask.save(root / "wide_mask.png")
    (root / "not_image.png").write_bytes(b"this is not a PNG file")
    damaged = root / "damaged"
    shutil.copytree(tiny_model, damaged)
    weights = damaged / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "not_model").mkdir()
    (root / "not_model" / "notes.txt").write_text("not a model")
    paths = {name: str(root / f"{name}.png") for name in
             ("init", "wide", "mask", "small_mask", "wide_mask", "not_image")}
    paths.update(tiny=str(tiny_model), models_dir=str(tiny_model.parent),
                 damaged=str(damaged), not_model=str(root / "not_model"),
                 missing=str(root / "missing.png"))
    return paths


def _fill(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        return paths[value[1:]]
    if isinstance(value, tuple):
        return tuple(_fill(v, paths) for v in value)
    return value


def _filled(changes: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    return {k: _fill(v, paths) for k, v in changes.items()}


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, Any]]:
    """One real engine and one fake, kept in the same state case after case."""
    import torch

    from sdstudio.engine import Engine

    torch.set_num_threads(1)  # tiny model: one thread is as fast and does not thrash
    pair = {"real": Engine(BASE), "fake": FakeEngine(BASE)}
    yield pair
    for engine in pair.values():
        engine.unload()


# ------------------------------------------------------------------------- running
def _summary(event: object, first_seed: int | None) -> tuple[Any, ...]:
    if isinstance(event, LoadProgress):
        return ("LoadProgress", event.fraction)
    if isinstance(event, Notice):
        return ("Notice",)
    if isinstance(event, ModelReady):
        return ("ModelReady", event.name, event.arch, event.untrained, event.device,
                event.dtype)
    if isinstance(event, Progress):
        return ("Progress", event.step, event.total, event.run, event.runs)
    if isinstance(event, Preview):
        return ("Preview", event.step, event.total, event.image.size)
    if isinstance(event, ImageReady):
        request = event.request
        if first_seed is not None:  # a random seed: compare the seeds' offsets
            request = request.replace(seed=(request.seed - first_seed) % (MAX_SEED + 1))
        info = event.info
        return ("ImageReady", event.index, request, event.image.size,
                (info.model_name, info.model_arch, info.model_untrained, info.device,
                 info.dtype))
    return (type(event).__name__,)


def _run_step(engine: Any, step: Step, paths: dict[str, str]) -> tuple[Any, ...]:
    events: list[object] = []
    cancel = CancelToken()
    returned: Any = None
    random_seed = False
    cancel_when = step.cancel_when() if isinstance(step, Gen) and step.cancel_when else None

    def on_event(event: object) -> None:
        events.append(event)
        if cancel_when is not None and cancel_when(event):
            cancel.cancel()

    try:
        if isinstance(step, Gen):
            request = GenerationRequest(**_filled({**REQUEST, **step.changes}, paths))
            random_seed = request.seed == -1
            if step.cancel_before:
                cancel.cancel()
            returned = [e.index for e in engine.generate(request, on_event, cancel)]
        elif isinstance(step, Load):
            returned = _summary(engine.load(_fill(step.model, paths), on_event), None)
        elif isinstance(step, Unload):
            engine.unload()
        else:
            engine.configure(engine.settings.replace(**_filled(step.changes, paths)))
        outcome, where = OK, None
    except Exception as exc:
        outcome = type(exc).__name__
        where = exc.field if isinstance(exc, RequestError) else None
    images = [e for e in events if isinstance(e, ImageReady)]
    first_seed = images[0].request.seed if random_seed and images else None
    return outcome, where, returned, [_summary(e, first_seed) for e in events]


def _prepare(engine: Any, case: Case, paths: dict[str, str]) -> None:
    engine.configure(BASE.replace(**_filled(case.settings, paths)))
    if case.cold:
        engine.unload()
    else:  # the tiny model loaded with these settings
        engine.generate(GenerationRequest(**{**_filled(REQUEST, paths), "steps": 1}))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fake_follows_the_engine(case: Case, engines: dict[str, Any],
                                 inputs: dict[str, str]) -> None:
    assert len(case.expect) == len(case.steps)
    results: dict[str, list[tuple[Any, ...]]] = {}
    for name, engine in engines.items():
        _prepare(engine, case, inputs)
        results[name] = [_run_step(engine, step, inputs) for step in case.steps]
    for i, (step, expected) in enumerate(zip(case.steps, case.expect, strict=True)):
        real, fake = results["real"][i], results["fake"][i]
        assert real[0] == expected, f"step {i} ({step}): the real engine gave {real[0]}"
        assert fake == real, f"step {i} ({step}): the fake differs from the engine"


def test_the_contract_sees_events_and_refusals(engines: dict[str, Any],
                                               inputs: dict[str, str]) -> None:
    """The comparison is not vacuous: a run's summary has every kind of event, with values."""
    case = Case("probe", (Configure(dict(device="cuda:99")), gen(batch_size=2)), (OK, OK))
    _prepare(engines["real"], case, inputs)
    _, _, _, events = _run_step(engines["real"], case.steps[0], inputs)
    _, _, returned, events = _run_step(engines["real"], case.steps[1], inputs)
    kinds = [e[0] for e in events]
    assert kinds[:2] == ["LoadProgress", "Notice"], kinds
    assert {"LoadProgress", "Notice", "ModelReady", "Progress", "Preview", "ImageReady"} <= set(
        kinds)
    assert returned == [0, 1]
    seeds = [e[2].seed for e in events if e[0] == "ImageReady"]
    assert seeds == [42, 43]


# ------------------------------------------------------------------------------ upscale
UPSCALES: list[tuple[str, dict[str, Any], str]] = [
    ("lanczos", dict(upscaler="Lanczos", scale=2), OK),
    ("none-rounded", dict(upscaler="None", scale=1.3), OK),
    ("model-file", dict(upscaler="2x-compact", scale=2), OK),
    ("model-twice", dict(upscaler="2x-compact", scale=3), OK),
    ("unknown", dict(upscaler="R-ESRGAN 4x+", scale=2), "ModelError"),
    ("latent", dict(upscaler="Latent", scale=2), "RequestError"),
    ("factor", dict(upscaler="Lanczos", scale=100), "RequestError"),
    ("too-large", dict(upscaler="Lanczos", scale=8, source="@big"), "RequestError"),
    ("not-image", dict(upscaler="Lanczos", scale=2, source="@not_image"), "ImageInputError"),
    ("cancelled", dict(upscaler="2x-compact", scale=2, cancel=True), "CancelledError"),
]


@pytest.mark.parametrize("changes,expected", [(c, e) for _, c, e in UPSCALES],
                         ids=[i for i, _, _ in UPSCALES])
def test_fake_upscales_files_as_the_engine_does(
        engines: dict[str, Any], inputs: dict[str, str], tmp_path: Path,
        changes: dict[str, Any], expected: str) -> None:
    """Engine.upscale_file and the fake's: the same outcome, file name, size and metadata,
    and progress that starts at 0 and ends at its total (the fake's tiles are its own)."""
    from sdstudio.engine.tiny_upscalers import build_upscaler
    from sdstudio.storage.png import read_texts

    folder = tmp_path / "upscalers"
    build_upscaler(folder / "2x-compact.pth", "compact", scale=2)
    big = tmp_path / "big.png"
    Image.new("RGB", (2048, 1100)).save(big)
    source = {"@big": str(big), "@not_image": inputs["not_image"]}.get(
        changes.get("source", ""), inputs["wide"])
    results: dict[str, tuple[Any, ...]] = {}
    for name, engine in engines.items():
        engine.configure(BASE.replace(upscaler_dirs=(str(folder),)))
        cancel = CancelToken()
        if changes.get("cancel"):
            cancel.cancel()
        progress: list[tuple[int, int]] = []
        out = tmp_path / name
        try:
            saved = engine.upscale_file(source, upscaler=changes["upscaler"],
                                        scale=changes["scale"], out_dir=out,
                                        on_progress=lambda d, t, seen=progress: seen.append((d, t)),
                                        cancel=cancel)
        except Exception as exc:
            results[name] = (type(exc).__name__, sorted(p.name for p in out.glob("*")))
            continue
        with Image.open(saved) as im:
            size = im.size
        assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1] > 0, progress
        results[name] = (OK, saved.name, size, read_texts(saved)[0])
    assert results["real"][0] == expected, results["real"]
    assert results["fake"] == results["real"]
