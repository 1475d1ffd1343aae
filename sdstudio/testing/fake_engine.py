"""A scriptable fake of ``sdstudio.engine.Engine``: same methods, same events, no torch.

For the worker and window tests, and for ``SDSTUDIO_FAKE_ENGINE=1`` (UI work on a machine
without a model); see :mod:`sdstudio.testing`. ``tests/worker/test_fake_contract.py`` runs the
same requests through this fake and through the real engine on a tiny model and checks that
both accept and refuse the same requests (same exception classes) and emit the same events in
the same order. What the fake reproduces, in the engine's order:

- refusals before anything loads: the request's validation, the init image and mask (read and
  fitted by the engine's own torch-free helpers in ``sdstudio.engine.images``), a denoising
  strength that runs no step, a cancelled token;
- the model: resolved like the engine does it (``""`` = the demo model, a local folder checked
  by ``sdstudio.engine.models.check_diffusers_folder``, a name in ``settings.model_dirs``);
  anything else is refused with a ModelError (the fake never downloads). A model that cannot
  be found leaves the loaded one in place, as in the engine;
- loading: the engine's LoadProgress steps, a Notice for each device fallback the engine would
  take (``settings.device`` asking for an accelerator that ``script.device`` is not), then
  ModelReady; a device or precision change in ``configure`` reloads on the next run;
- LoRAs and a separate VAE that cannot be found: ModelError, after the load, as in the engine;
- a run: one Progress per step callback the engine's pipeline makes (that count depends on the
  sampler and, for img2img and inpaint, the strength: see :func:`denoising_steps`), a Preview
  every ``settings.preview_every`` steps, then one ImageReady per image with seeds seed + i.

Images are deterministic functions of the request: a colour from the seed; img2img blends it
into the fitted init image; inpaint puts it back only where the mask is (the engine's own
composite, so ``inpaint_only_masked`` returns the source's size as the engine does).
"""

from __future__ import annotations

import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdstudio.core import hires, paths
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import ModelError, RequestError
from sdstudio.core.events import (
    EventCallback,
    ImageReady,
    LoadProgress,
    ModelReady,
    Notice,
    Preview,
    Progress,
    VramUsage,
    ignore_event,
)
from sdstudio.core.request import MAX_SEED, GenerationInfo, GenerationRequest, LoraSpec, Mode
from sdstudio.core.sampler_names import model_evaluations, steps_problem
from sdstudio.core.settings import EngineSettings

if TYPE_CHECKING:
    from PIL.Image import Image

    from sdstudio.engine.images import InpaintJob

DEMO_NAME = paths.DEMO_NAME  # what the engine calls its built-in demo model
_DEMO_KEY = "<demo>"
_RELOAD_KEY = "<reload>"
_VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")  # sdstudio.engine.lora.load_vae's

def denoising_steps(request: GenerationRequest) -> int:
    """How many step callbacks (Progress events) the engine's pipeline makes for one run of
    ``request``: one per model evaluation of its sampler, as A1111 1.10 runs it (img2img and
    inpaint: ``t_enc = int(strength * steps)``, t_enc + 1 steps; see
    :func:`sdstudio.core.sampler_names.model_evaluations`)."""
    strength = None if request.mode is Mode.TXT2IMG else request.strength
    return model_evaluations(request.sampler, request.schedule_type, request.steps, strength)


def hires_steps(request: GenerationRequest) -> int:
    """The step callbacks of the hires pass (0 without one): about the engine's count (one
    per evaluation of the hires sampler at the hires steps)."""
    if not hires.runs_hires(request):
        return 0
    sampler, schedule = hires.hires_sampler(request)
    return model_evaluations(sampler, schedule, request.hires_steps or request.steps)


@dataclass
class FakeScript:
    """What the fake does; change it between calls (it is read at every call)."""

    step_delay: float = 0.0
    load_delay: float = 0.0
    # models whose load raises ModelError, as a damaged model does (so does a folder holding a
    # file named CORRUPT)
    fail_models: set[str] = field(default_factory=set)
    fail_generate: BaseException | None = None  # raised once by the next generate
    on_step: Callable[[int], None] | None = None
    device: str = "cpu"  # the machine's best device: what settings.device "auto" gets
    dtype: str = "fp32"  # the engine's names: fp32, fp16, bf16
    memory: dict[str, object] = field(default_factory=lambda: {"mode": "off"})
    # GPU memory reported after a load and at every step, as the engine does on CUDA; a
    # callable gets the step number (0 for the load)
    vram: VramUsage | Callable[[int], VramUsage | None] | None = None
    upscale_tiles: int = 4  # tiles an upscale reports (each takes step_delay)

    def vram_at(self, step: int) -> VramUsage | None:
        return self.vram(step) if callable(self.vram) else self.vram


@dataclass(frozen=True)
class _Model:
    key: str
    name: str
    arch: str
    untrained: bool


@dataclass(frozen=True)
class _Inputs:
    image: Image | None = None  # img2img / inpaint input at width x height
    job: InpaintJob | None = None


class FakeEngine:
    def __init__(self, settings: EngineSettings | None = None,
                 script: FakeScript | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.script = script or FakeScript()
        self.loaded: ModelReady | None = None
        self.calls: list[tuple[str, Any]] = []
        self._model: _Model | None = None
        # models kept in RAM as the engine keeps them (engine/model_cache.py), by
        # (reference, device, dtype); the loaded one's own such key
        self._kept: OrderedDict[tuple[str, str, str], _Model] = OrderedDict()
        self._loaded_key: tuple[str, str, str] | None = None

    # ------------------------------------------------------------------ configuration
    def configure(self, settings: EngineSettings) -> None:
        self.calls.append(("configure", settings))
        old, self.settings = self.settings, settings
        if self._model is not None and (old.device != settings.device
                                        or old.precision != settings.precision):
            self._model = _Model(_RELOAD_KEY, self._model.name, self._model.arch,
                                 self._model.untrained)

    def _ref_key(self, ref: str) -> str:  # as Engine._ref_key: when a run must (re)load
        ref = (ref or "").strip() or (self.settings.default_model or "").strip()
        if not ref:
            return _DEMO_KEY
        path = Path(ref).expanduser()
        return str(path.resolve()) if path.exists() else ref

    def _find_model(self, model: str) -> _Model:
        """The model ``model`` names, found as ``sdstudio.engine.models.resolve`` finds local
        models; ModelError where the engine refuses it before loading anything."""
        from sdstudio.engine import library, models, tiny  # torch-free parts of the engine

        ref = (model or "").strip() or (self.settings.default_model or "").strip()
        if not ref:
            return _Model(_DEMO_KEY, DEMO_NAME, "sd1", True)
        path = Path(ref).expanduser()
        if not path.exists() and self.settings.model_dirs:
            found = library.resolve_model_name(ref, self.settings.model_dirs)
            path = Path(found) if found is not None else path
        if ref in self.script.fail_models or (path / "CORRUPT").exists():
            raise ModelError(f"The model {Path(ref).name!r} is damaged and cannot be loaded",
                             details="fake: unexpected end of the weights file")
        if not path.exists():
            raise ModelError(f"model {ref!r} was not found (the fake engine loads local "
                             "models only and never downloads)")
        path = path.resolve()
        key = self._ref_key(model)
        if path.is_dir():
            models.check_diffusers_folder(path)
            untrained = tiny.is_tiny_model(path)
            name = path.name + (" (untrained)" if untrained else "")
            return _Model(key, name, models.detect_arch(path), untrained)
        return _Model(key, path.stem, "sd1", False)

    def _device(self) -> tuple[str, str, list[str]]:
        """(device, dtype, notes) as ``sdstudio.engine.device.choose_device`` picks them on a
        machine whose best device is ``script.device``."""
        script, settings = self.script, self.settings
        wanted = (settings.device or "auto").strip().lower()
        have = script.device
        device, notes = have, []
        if wanted != "auto":
            kind = wanted.split(":")[0]
            if kind == "cpu":
                device = "cpu"
            elif kind in ("cuda", "mps") and have.lower().startswith(kind):
                device = have
            else:
                device = "cpu"
                notes.append(f"{settings.device} is not available; using the CPU"
                             if kind == "cuda" else
                             "Apple MPS is not available; using the CPU" if kind == "mps" else
                             f"device {settings.device!r} is not supported; using the CPU")
        precision = (settings.precision or "auto").lower()
        if precision in ("fp16", "bf16", "fp32"):
            dtype = precision
            if precision == "fp16" and device == "cpu":
                notes.append("fp16 on the CPU is very slow; fp32 or bf16 is recommended")
        else:
            dtype = script.dtype if device == have else "fp32"
        return device, dtype, notes

    # --------------------------------------------------------------------- load/unload
    def load(self, model: str = "", on_event: EventCallback = ignore_event,
             cancel: CancelToken | None = None) -> ModelReady:
        self.calls.append(("load", model))
        cancel = cancel or CancelToken()
        script = self.script
        on_event(LoadProgress("Finding the model", 0.0))
        found = self._find_model(model)
        cancel.raise_if_cancelled()
        device, dtype, notes = self._device()
        for note in notes:
            on_event(Notice(note))
        key = (found.key, device, dtype)
        kept = self._kept.pop(key, None)
        self._switch_away()
        if kept is None and key in self._kept:  # the one just loaded, asked for again
            kept = self._kept.pop(key)
        self._loaded_key = key
        if kept is not None:
            on_event(LoadProgress(f"Taking {found.name} from RAM", 0.5))
        else:
            on_event(LoadProgress(f"Loading {found.name}", 0.1))
            _sleep(script.load_delay * 0.8)
            cancel.raise_if_cancelled()
            on_event(LoadProgress(f"Moving the model to {device}", 0.8))
            _sleep(script.load_delay * 0.2)
            cancel.raise_if_cancelled()
        ready = ModelReady(
            name=found.name, arch=found.arch, device=device, dtype=dtype,
            memory=dict(script.memory), untrained=found.untrained, load_s=script.load_delay,
            vram=script.vram_at(0),
        )
        self.loaded, self._model = ready, found
        on_event(LoadProgress("Model ready", 1.0))
        on_event(ready)
        return ready

    def unload(self) -> None:
        self.loaded = None
        self._model = None
        self._loaded_key = None
        self._kept.clear()

    def _switch_away(self) -> None:
        """As Engine._switch_away: the loaded model is kept when the cache setting allows."""
        from sdstudio.engine import model_cache  # torch-free

        if self._model is not None and self._loaded_key is not None:
            limit = model_cache.capacity(self.settings.checkpoint_cache,
                                         model_cache.available_memory(), 1)
            if limit:
                self._kept[self._loaded_key] = self._model
                while len(self._kept) > limit:
                    self._kept.popitem(last=False)
        self.loaded, self._model, self._loaded_key = None, None, None

    # ----------------------------------------------------------------------- generate
    def generate(self, request: GenerationRequest, on_event: EventCallback = ignore_event,
                 cancel: CancelToken | None = None) -> list[ImageReady]:
        self.calls.append(("generate", request))
        cancel = cancel or CancelToken()
        request = request.validated()
        if request.hires and request.init_image:  # txt2img only, as the engine
            request = request.replace(hires=False)
        _, loras = request.prompt_loras()
        script = self.script
        if script.fail_generate is not None:
            exc, script.fail_generate = script.fail_generate, None
            raise exc
        inputs = _prepare_inputs(request)
        image_mode = request.mode is not Mode.TXT2IMG
        problem = steps_problem(request.sampler, request.schedule_type, request.steps,
                                request.strength if image_mode else None)
        if problem:
            raise RequestError("strength" if image_mode else "steps", problem)
        cancel.raise_if_cancelled()
        if self._model is None or self._model.key != self._ref_key(request.model):
            self.load(request.model, on_event, cancel)
        assert self.loaded is not None
        self._check_addons(loras, request.vae)
        return self._run(request, inputs, on_event, cancel)

    def _check_addons(self, loras: tuple[LoraSpec, ...], vae: str) -> None:
        """LoRAs and the VAE file are looked up as the engine looks them up."""
        from sdstudio.engine.lora import LORA_SUFFIXES, find_file

        dirs = tuple(self.settings.lora_dirs)
        for spec in loras:
            if find_file(spec.name, dirs, LORA_SUFFIXES) is None:
                where = ", ".join(dirs) if dirs else "no LoRA folder is configured"
                raise ModelError(f"LoRA {spec.name!r} not found ({where})")
        vae = (vae or "").strip()
        if vae and not Path(vae).expanduser().exists() and find_file(
                vae, self.settings.vae_dirs, _VAE_SUFFIXES) is None:
            raise ModelError(f"VAE {vae!r} not found")

    def _run(self, request: GenerationRequest, inputs: _Inputs, on_event: EventCallback,
             cancel: CancelToken) -> list[ImageReady]:
        from PIL import Image

        from sdstudio.engine import images as img

        script, loaded = self.script, self.loaded
        assert loaded is not None
        first_seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
        seeds = request.seeds(first_seed)
        subseeds = request.variation_seeds()
        first, second = denoising_steps(request), hires_steps(request)
        total = first + second  # both passes, as the engine counts them
        preview_every = max(0, int(self.settings.preview_every))
        out: list[ImageReady] = []
        for run in range(request.batch_count):
            cancel.raise_if_cancelled()
            started = last = time.perf_counter()
            for step in range(1, total + 1):
                cancel.raise_if_cancelled()
                _sleep(script.step_delay)
                if script.on_step is not None:
                    script.on_step(step)
                now = time.perf_counter()
                in_first = step <= first
                phase = "" if not second else "first pass" if in_first else "hires"
                on_event(Progress(step, total, run + 1, request.batch_count, now - started,
                                  now - last, vram=script.vram_at(step), phase=phase,
                                  phase_step=0 if not second else step if in_first
                                  else step - first,
                                  phase_total=0 if not second else first if in_first
                                  else second))
                last = now
                if preview_every and step % preview_every == 0:
                    shade = int(255 * step / total)
                    on_event(Preview(step, total,
                                     Image.new("RGB", (request.width // 8, request.height // 8),
                                               (shade, shade // 2, 255 - shade))))
            cancel.raise_if_cancelled()
            for i in range(request.batch_size):
                index = run * request.batch_size + i
                seed = seeds[index]
                rng = random.Random(seed)
                colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
                size = (request.width, request.height) if inputs.image is None else (
                    inputs.image.size)  # an outpaint runs at its extended size
                if second:  # the hires fix's target
                    target = hires.request_target(request)
                    size = (target.width, target.height)
                image = Image.new("RGB", size, colour)
                if inputs.image is not None:
                    image = Image.blend(inputs.image.convert("RGB"), image,
                                        request.strength * 0.5)
                if inputs.job is not None:
                    image = img.composite(image, inputs.job)
                info = GenerationInfo(
                    model_name=loaded.name, model_arch=loaded.arch,
                    model_untrained=loaded.untrained, device=loaded.device, dtype=loaded.dtype,
                    vae_name=Path(request.vae.strip()).stem if request.vae.strip() else "",
                    elapsed_s=round(time.perf_counter() - started, 3),
                )
                event = ImageReady(index, image, request.image_request(seed, subseeds[index]),
                                   info)
                on_event(event)
                out.append(event)
        return out

    # ------------------------------------------------------------------------ upscaling
    def upscale_file(self, source: str | Path, *, upscaler: str, scale: float,
                     out_dir: str | Path, tile: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     cancel: CancelToken | None = None, allow_path: bool = False) -> Path:
        """As Engine.upscale_file (the same file handling, metadata and refusals), with a
        Lanczos resize standing in for any upscaler model found in the upscaler folders,
        in ``script.upscale_tiles`` tiles of ``script.step_delay`` each."""
        from sdstudio.engine import extras

        self.calls.append(("upscale_file", (str(source), upscaler, scale)))
        return extras.upscale_file(source, upscaler=upscaler, scale=scale, out_dir=out_dir,
                                   on_progress=on_progress, cancel=cancel,
                                   allow_path=allow_path, upscale=self._fake_upscale)

    def _fake_upscale(self, image: Image, upscaler: str, scale: float, *,
                      on_progress: Callable[[int, int], None] | None = None,
                      cancel: CancelToken | None = None, **_: object) -> Image:
        from PIL import Image as PILImage

        from sdstudio.core import upscalers as names

        name = names.normalise(upscaler)
        if names.kind_of(name) == "latent":
            raise RequestError("upscaler", f"{name} upscales latents, in the hires fix only")
        found = names.model_files(names.upscaler_dirs(self.settings))
        if names.kind_of(name) == "model" and not any(
                name in (listed, path.name, path.stem) for listed, path in found):
            raise ModelError(f"unknown upscaler {name!r}: no such file in the upscaler folders")
        dest = names.target_size(image.width, image.height, scale)
        tiles = max(1, self.script.upscale_tiles)
        for done in range(tiles + 1):
            if on_progress is not None:
                on_progress(done, tiles)
            if done < tiles:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                _sleep(self.script.step_delay)
        return image.resize(dest, PILImage.Resampling.LANCZOS)


def _prepare_inputs(request: GenerationRequest) -> _Inputs:
    """The init image and mask, read and fitted by the engine's own (torch-free) helper."""
    from sdstudio.engine import images as img

    image, job = img.request_inputs(request)
    return _Inputs(image, job)


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


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
