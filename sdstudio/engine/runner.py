"""The engine: load a model, run requests, report through a plain callback.

``Engine`` is what the worker thread and the CLI drive (see docs/architecture.md). It never
imports Qt; it reports with ``on_event(event)`` (core.events) and checks a CancelToken inside
the denoising loop, raising CancelledError there so a cancelled run stops within one step and
never reaches the VAE decode.

Model add-ons come from ``sdstudio.engine.lora``:
- ``apply_loras(pipe, specs, settings) -> dict[name, short hash]`` is called before a run when
  the request has LoRAs, and once with ``()`` after LoRAs were used so they can be removed;
- ``apply_embeddings(pipe, settings)`` loads the textual-inversion embeddings once;
- ``load_vae(path, *, device, dtype, settings, scaling_factor) -> AutoencoderKL`` for
  ``request.vae``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from sdstudio.core import paths
from sdstudio.core.cancel import CancelToken
from sdstudio.core.control import control_model_dirs
from sdstudio.core.errors import OutOfMemoryError, RequestError, SDStudioError
from sdstudio.core.events import (
    EventCallback,
    ImageReady,
    LoadProgress,
    ModelReady,
    Notice,
    ignore_event,
)
from sdstudio.core.request import MAX_SEED, GenerationInfo, GenerationRequest, LoraSpec, Mode
from sdstudio.core.sampler_names import steps_problem
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import (
    accel,
    controlnet,
    cpu_attention,
    hashing,
    ip_adapter,
    lora,
    model_cache,
    models,
    taesd,
)
from sdstudio.engine import device as devices
from sdstudio.engine import images as img
from sdstudio.engine import threads as cpu_threads
from sdstudio.engine.hires import HiresPass, memory_size
from sdstudio.engine.ksampling import A1111Scheduler
from sdstudio.engine.latents import StepCallback, Variation, decode_latents, initial_latents
from sdstudio.engine.masked_content import init_latents as masked_init_latents
from sdstudio.engine.memory import MemoryPlan, decide_memory, next_fallback
from sdstudio.engine.pipelines import PipelineSet
from sdstudio.engine.samplers import build_scheduler, scheduler_info
from sdstudio.engine.text import encode_prompts

_DEMO_KEY = "<demo>"


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    import sdstudio

    return {
        "sdstudio": getattr(sdstudio, "__version__", ""),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def _default_size(arch: str) -> int:
    if arch.startswith("sdxl"):
        return 1024
    return 768 if arch == "sd2-v" else 512


def _module_bytes(pipe: Any) -> int:
    total = 0
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total


@dataclass
class _Loaded:
    source: models.ModelSource
    arch: str
    pipes: PipelineSet
    choice: devices.DeviceChoice
    scheduler_config: dict[str, Any]
    model_bytes: int
    key: str
    original_vae: Any
    cache_key: str = ""  # engine/model_cache.py; "" = never kept in RAM
    sha256: str | None = None
    offloaded: bool = False
    offload_owner: Any = None
    attention_slicing: bool = False
    sequential: bool = False  # the offload hooks are sequential (per layer), not per model
    accel: accel.AccelPlan = field(default_factory=accel.AccelPlan)
    vae_ref: str = ""
    vae_name: str = ""
    vae_sha256: str = ""
    loras_active: bool = False
    notes: list[str] = field(default_factory=list)
    schedulers: dict[str, Any] = field(default_factory=dict)
    embedding_notices: set[str] = field(default_factory=set)  # skipped embeddings told
    ip_adapters: ip_adapter.IPAdapterSet | None = None  # in the UNet (engine/ip_adapter.py)
    controlnets: controlnet.ControlNetSet | None = None  # kept loaded (engine/controlnet.py)


@dataclass
class _MemoryState:
    """The savers in force for one request, and the out-of-memory fallbacks taken."""

    plan: MemoryPlan
    notes: list[str] = field(default_factory=list)


_T = TypeVar("_T")


@dataclass
class _Prepared:
    """Per-job inputs computed before anything touches the device."""

    mode: Mode
    image: Image.Image | None = None  # img2img / inpaint input at width x height
    job: img.InpaintJob | None = None
    width: int = 0  # the size generated at: the request's, or its outpainted canvas
    height: int = 0


class Engine:
    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings: EngineSettings = settings or EngineSettings()
        self.loaded: ModelReady | None = None
        self._model: _Loaded | None = None
        self._versions: dict[str, str] | None = None
        self._threads = cpu_threads.governor()  # torch's CPU threads (engine/threads.py)
        self._threads.set_fixed(self.settings.cpu_threads)
        self._cache = model_cache.ModelCache()  # models kept in RAM between switches
        self._taesd = taesd.PreviewDecoders()  # TAESD live previews, loaded on first use

    # ------------------------------------------------------------------ configuration
    def configure(self, settings: EngineSettings) -> None:
        """New settings. Device/precision changes reload the model on the next run; memory
        settings apply to the next run."""
        old = self.settings
        self.settings = settings
        if settings.cpu_threads != old.cpu_threads:
            self._threads.set_fixed(settings.cpu_threads)
        if settings.checkpoint_cache != old.checkpoint_cache:
            self._trim_cache()
        if self._model is not None and (
            old.device != settings.device or old.precision != settings.precision
            or old.compile_unet != settings.compile_unet
        ):
            self._model.key = "<reload>"

    def _ref_key(self, ref: str) -> str:
        ref = (ref or "").strip() or (self.settings.default_model or "").strip()
        if not ref:
            return _DEMO_KEY
        path = Path(ref).expanduser()
        if path.exists():
            return str(path.resolve())
        return ref

    # --------------------------------------------------------------------- load/unload
    def load(self, model: str = "", on_event: EventCallback = ignore_event,
             cancel: CancelToken | None = None) -> ModelReady:
        """Load ``model`` (see models.resolve), freeing the previous one first."""
        cancel = cancel or CancelToken()
        started = time.perf_counter()
        on_event(LoadProgress("Finding the model", 0.0))
        source = models.resolve(
            model, self.settings, lambda text, frac: on_event(LoadProgress(text, frac)))
        arch = models.detect_arch(source.path) if source.kind != "file" else None
        cancel.raise_if_cancelled()
        choice = devices.choose_device(self.settings)
        for note in choice.notes:
            on_event(Notice(note))
        key = self._cache_key(model, source, choice)
        if self._model is not None and self._model.cache_key == key:
            # a reload asked for (device/precision settings changed) that ends on the same
            # device and dtype: keep the loaded weights rather than read a second copy
            self._switch_away(0)
        kept = self._cache.take(key)  # before the switch: the one wanted is not evicted
        self._switch_away(0 if kept is not None else model_cache.loaded_estimate(
            source.path, torch.empty((), dtype=choice.dtype).element_size()))
        if kept is not None:  # switching back: no file read
            on_event(LoadProgress(f"Taking {source.name} from RAM", 0.5))
            return self._ready(*self._bring_back(kept, model), started, on_event)
        on_event(LoadProgress(f"Loading {source.name}", 0.1))
        pipe = models.load_pipeline(source, arch, device=choice.device, dtype=choice.dtype,
                                    settings=self.settings)
        try:
            if arch is None:
                arch = models.arch_from_pipe(pipe)
            pipe.set_progress_bar_config(disable=True)
            cancel.raise_if_cancelled()
            on_event(LoadProgress(f"Moving the model to {choice.name}", 0.8))
            model_bytes = _module_bytes(pipe)
            size = _default_size(arch)
            plan = self._plan(choice, model_bytes, size, size, 1, resident=False)
            loaded = _Loaded(
                source=source, arch=arch, pipes=PipelineSet(pipe, arch), choice=choice,
                scheduler_config=dict(pipe.scheduler.config), model_bytes=model_bytes,
                key=self._ref_key(model), original_vae=pipe.vae, cache_key=key,
                notes=list(choice.notes),
            )
            self._place(loaded, pipe, plan.cpu_offload)
            self._accelerate(loaded, pipe)
            if choice.device.type == "cpu":  # CFG's rows in parallel (engine/threads.py)
                cpu_threads.parallel_batches(pipe.unet)
            cancel.raise_if_cancelled()
        except BaseException as exc:
            del pipe
            self._model = None
            devices.free_device_memory()
            if devices.is_out_of_memory(exc):
                raise OutOfMemoryError(
                    f"not enough memory on {choice.name} to load {source.name}; set memory "
                    "mode to low (CPU offload) or use the CPU", str(exc)) from None
            raise
        self._model = loaded
        return self._ready(loaded, plan, started, on_event)

    def _ready(self, loaded: _Loaded, plan: MemoryPlan, started: float,
               on_event: EventCallback) -> ModelReady:
        ready = ModelReady(
            name=loaded.source.name, arch=loaded.arch,
            device=loaded.choice.name, dtype=loaded.choice.label,
            precision_reason="; ".join((loaded.choice.reason, *loaded.accel.reasons)),
            memory=plan.to_dict(), untrained=loaded.source.untrained,
            load_s=round(time.perf_counter() - started, 3),
            vram=devices.vram_usage(loaded.choice.device, max_age_s=0),
        )
        self.loaded = ready
        on_event(LoadProgress("Model ready", 1.0))
        on_event(ready)
        return ready

    # ------------------------------------------------------ models kept in RAM (model_cache)
    def _cache_key(self, ref: str, source: models.ModelSource,
                   choice: devices.DeviceChoice) -> str:
        return model_cache.cache_key(self._ref_key(ref), source.path, choice.device,
                                     choice.dtype, getattr(self.settings, "compile_unet", ""))

    def _trim_cache(self, needed: int = 0) -> None:
        """Free kept models beyond the setting, or while available memory is short of
        ``needed`` plus the margin (least recently used first)."""
        sizes = self._cache.sizes()
        if not sizes:
            return
        available = model_cache.available_memory()
        limit = model_cache.capacity(self.settings.checkpoint_cache, available, max(sizes))
        if self._cache.trim(limit, available, needed):
            devices.free_device_memory()

    def _switch_away(self, needed: int) -> None:
        """Before another model loads: keep the loaded one in RAM, pristine, when the cache
        setting and the available memory allow; free it otherwise."""
        model = self._model
        kept = self._keepable(model) if model is not None else None
        self._unload_current(collect=kept is None)
        if kept is not None:
            for addon in ("ip_adapters", "controlnets"):  # freed by the unload above
                if getattr(kept, addon, None) is not None:
                    setattr(kept, addon, None)
            kept.offloaded, kept.offload_owner, kept.sequential = False, None, False
            if kept.choice.device.type != "cpu":
                kept.pipes.base.to("cpu")
                devices.free_device_memory()
            self._cache.put(kept.cache_key, kept, kept.model_bytes)
        self._trim_cache(needed)

    def _keepable(self, model: _Loaded) -> _Loaded | None:
        """A copy of ``model``'s record to keep, its weights as its file made them (LoRAs
        removed, its own VAE, no embeddings); None when it is not to be kept."""
        limit = model_cache.capacity(self.settings.checkpoint_cache,
                                     model_cache.available_memory(), model.model_bytes)
        if not model.cache_key or model.sequential or limit == 0:
            return None
        try:
            self._apply_loras(model, ())
            self._apply_vae(model, "")
            model_cache.unload_embeddings(model.pipes.base, lora._EMB_ATTR)
        except Exception:
            return None  # freed instead: never kept half restored
        kept = copy.copy(model)
        kept.embedding_notices = set()
        return kept

    def _bring_back(self, kept: _Loaded, ref: str) -> tuple[_Loaded, MemoryPlan]:
        """A kept model made the loaded one: placed on its device as a fresh load is."""
        choice = kept.choice
        size = _default_size(kept.arch)
        plan = self._plan(choice, kept.model_bytes, size, size, 1, resident=False)
        self._place(kept, kept.pipes.base, plan.cpu_offload)
        if choice.device.type == "cpu":
            cpu_threads.parallel_batches(kept.pipes.base.unet)
        kept.key = self._ref_key(ref)
        self._model = kept
        return kept, plan

    def unload(self) -> None:
        """Free the loaded model and the models kept in RAM (weights and the device memory
        they held)."""
        if self._cache.clear():
            devices.free_device_memory()
        self._unload_current()

    def _unload_current(self, collect: bool = True) -> None:
        """Free the loaded model (weights and the device memory they held). ``collect``
        False: no garbage collection (~0.3 s), for a model kept in RAM."""
        if self._model is None:
            return
        model = self._model
        self._model = None
        self.loaded = None
        self._taesd.release()
        for pipe in model.pipes.pipes:
            with contextlib.suppress(Exception):
                pipe.remove_all_hooks()
        cpu_threads.release_batches(model.pipes.base.unet)
        if model.ip_adapters is not None:
            model.ip_adapters.unload()  # its image encoders go now
            model.ip_adapters = None
        model.pipes = None  # type: ignore[assignment]
        del model
        if collect:
            devices.free_device_memory()

    def upscale_file(self, source: str | Path, *, upscaler: str, scale: float,
                     out_dir: str | Path, tile: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     cancel: CancelToken | None = None, allow_path: bool = False) -> Path:
        """Upscale an image file ("Extras") on this engine's device, with the upscalers in
        the settings' folders; the saved PNG's path (see :mod:`sdstudio.engine.extras`)."""
        from sdstudio.engine import extras
        from sdstudio.engine.upscale import upscaler_dirs

        choice = devices.choose_device(self.settings)
        return extras.upscale_file(
            source, upscaler=upscaler, scale=scale, out_dir=out_dir,
            dirs=upscaler_dirs(self.settings), device=choice.device, dtype=choice.dtype,
            tile=tile, on_progress=on_progress, cancel=cancel, allow_path=allow_path)

    def previewer(self, loaded: _Loaded, on_event: EventCallback) -> taesd.Previewer | None:
        """The live previews' decoder with Live preview: TAESD and a TAESD file for this
        model (engine/taesd.py), else None (the linear map). A refused file is one Notice."""
        if self.settings.preview_method != "TAESD" or not self.settings.preview_every:
            return None
        choice = loaded.choice
        device = loaded.pipes.base._execution_device if loaded.offloaded else choice.device
        previewer, notice = self._taesd.previewer(loaded.arch, taesd.decoder_dirs(self.settings),
                                                  device, choice.dtype)
        if notice:
            on_event(Notice(notice))
        return previewer

    def _accelerate(self, loaded: _Loaded, pipe: Any) -> None:
        """The speed paths for this device (engine/accel.py): on CUDA channels_last and
        fused QKV projections, FP8 weight storage for low-memory SDXL where the GPU has
        it, ``torch.compile`` of the UNet with Speed: compile."""
        choice = loaded.choice
        plan = accel.decide_accel(
            choice.kind, capability=accel.cuda_capability(choice.device), arch=loaded.arch,
            memory_mode=self.settings.memory_mode, compile_setting=self.settings.compile_unet,
            compile_available=self.settings.compile_unet and accel.compile_available(
                choice.kind), dtype=choice.dtype_name)
        accel.apply_accel(pipe.unet, pipe.vae, plan, compute_dtype=choice.dtype)
        loaded.accel = plan
        loaded.notes.extend(plan.notes)  # asked for, not done (Speed: compile off CUDA)

    def _place(self, loaded: _Loaded, pipe: Any, offload: bool) -> None:
        if offload:
            pipe.enable_model_cpu_offload(device=loaded.choice.device)
            loaded.offloaded, loaded.offload_owner = True, pipe
        else:
            pipe.to(loaded.choice.device)
            loaded.offloaded, loaded.offload_owner = False, None

    # ------------------------------------------------------------------------- memory
    def _plan(self, choice: devices.DeviceChoice, model_bytes: int, width: int, height: int,
              batch: int, *, resident: bool) -> MemoryPlan:
        free, total = devices.memory_info(choice.device)
        if resident and choice.kind == "cuda":
            free += model_bytes  # the weights already there count as usable
        bytes_per_value = 4 if choice.dtype == torch.float32 else 2
        return decide_memory(choice.kind, free, total, model_bytes, width, height, batch,
                             self.settings, bytes_per_value=bytes_per_value)

    def _apply_memory(self, loaded: _Loaded, pipe: Any, plan: MemoryPlan) -> None:
        base = loaded.pipes.base
        if plan.attention_slicing != loaded.attention_slicing:
            if plan.attention_slicing:
                base.enable_attention_slicing()
            else:
                base.disable_attention_slicing()
            loaded.attention_slicing = plan.attention_slicing
        vae = base.vae
        (vae.enable_slicing if plan.vae_slicing else vae.disable_slicing)()
        (vae.enable_tiling if plan.vae_tiling else vae.disable_tiling)()
        sequential = plan.sequential_offload
        if plan.cpu_offload or sequential:
            if loaded.offload_owner is not pipe or loaded.sequential != sequential:
                if loaded.offloaded:
                    for p in loaded.pipes.pipes:
                        p.remove_all_hooks()
                if sequential:
                    pipe.enable_sequential_cpu_offload(device=loaded.choice.device)
                else:
                    pipe.enable_model_cpu_offload(device=loaded.choice.device)
                loaded.offloaded, loaded.offload_owner = True, pipe
                loaded.sequential = sequential
        elif loaded.offloaded:
            for p in loaded.pipes.pipes:
                p.remove_all_hooks()
            base.to(loaded.choice.device)
            loaded.offloaded, loaded.offload_owner, loaded.sequential = False, None, False

    # ------------------------------------------------------------------ add-ons (lora.py)
    def _apply_loras(self, loaded: _Loaded, specs: tuple[LoraSpec, ...]) -> dict[str, str]:
        if not specs and not loaded.loras_active:
            return {}
        with accel.unfused(loaded.pipes.base.unet):  # LoRAs change q/k/v in place
            hashes = lora.apply_loras(loaded.pipes.base, specs, self.settings)
        loaded.loras_active = bool(specs)
        if loaded.offloaded:
            loaded.offload_owner = None  # re-install offload hooks on the changed modules
        return dict(hashes or {})

    def _apply_embeddings(self, loaded: _Loaded, on_event: EventCallback) -> list[str]:
        """Textual-inversion embeddings from ``settings.embedding_dirs`` (loaded once). One
        that is skipped (hostile, unreadable, for another model) is a Notice, once per loaded
        model; the notes returned go into every image's metadata."""
        if not paths.search_dirs("embedding", self.settings):
            return []
        skipped = lora.apply_embeddings(loaded.pipes.base, self.settings) or {}
        notes = [f"embedding {token} skipped: {why}" for token, why in skipped.items()]
        for note in notes:
            if note not in loaded.embedding_notices:
                loaded.embedding_notices.add(note)
                on_event(Notice(note))
        return notes

    def _apply_vae(self, loaded: _Loaded, ref: str) -> None:
        ref = (ref or "").strip()
        if ref == loaded.vae_ref:
            return
        if not ref:
            vae, name, sha = loaded.original_vae, "", ""
        else:
            vae = lora.load_vae(Path(ref), device=loaded.choice.device,
                                dtype=loaded.choice.dtype, settings=self.settings,
                                scaling_factor=loaded.original_vae.config.scaling_factor)
            name = Path(ref).stem
            path = Path(ref).expanduser()  # a name from the VAE folders: its file, for the hash
            if not path.exists():
                path = lora.find_file(ref, paths.search_dirs("vae", self.settings),
                                      lora.VAE_SUFFIXES) or path
            sha = hashing.file_sha256(path) if path.is_file() else ""  # a folder has none
            if not loaded.offloaded:
                vae.to(loaded.choice.device)
            if loaded.accel.channels_last:  # as the model's own VAE (engine/accel.py)
                vae.to(memory_format=torch.channels_last)
        loaded.pipes.set_component("vae", vae)
        loaded.vae_ref, loaded.vae_name, loaded.vae_sha256 = ref, name, sha
        if loaded.offloaded:
            loaded.offload_owner = None

    def _apply_ip_adapters(self, loaded: _Loaded, request: GenerationRequest,
                           prepared: _Prepared) -> tuple[list[Any], dict[str, str]]:
        """The request's IP-Adapter units (engine/ip_adapter.py): the adapters loaded into
        the UNet (kept while the next request uses the same files, removed when none does)
        and the reference images encoded. Returns the pass extras for ``_call`` and the
        units' model titles for the infotext."""
        units, titles = ip_adapter.reference_units(request, self.settings, prepared.image)
        if not units and loaded.ip_adapters is None:
            return [], {}
        before = loaded.ip_adapters
        unet = loaded.pipes.base.unet
        if loaded.offloaded and ip_adapter.reloads(before, unet, units):
            # the adapters go into a UNet without offload hooks (sequential offload keeps
            # the weights off the module); _apply_memory places it again after
            for pipe in loaded.pipes.pipes:
                pipe.remove_all_hooks()
            loaded.offload_owner = None
        home = torch.device("cpu") if loaded.offloaded else loaded.choice.device
        loaded.ip_adapters, conditioning = ip_adapter.prepare(
            before, unet, units, model_name=loaded.source.name,
            control_dirs=control_model_dirs(self.settings), device=loaded.choice.device,
            encoder_device=home, dtype=loaded.choice.dtype, guidance=request.cfg_scale > 1)
        if loaded.ip_adapters is not before and loaded.offloaded:
            loaded.offload_owner = None  # re-install offload hooks on the changed UNet
        return ([conditioning] if conditioning is not None else []), titles

    def _apply_controlnets(self, loaded: _Loaded, request: GenerationRequest,
                           prepared: _Prepared) -> tuple[list[Any], dict[str, str]]:
        """The request's ControlNet units (engine/controlnet.py): their models loaded (kept
        while the next request uses the same files, freed when none does), their control
        images prepared. Returns the pass extras for ``_call`` and the models' titles."""
        loaded.controlnets, conditioning, titles = controlnet.prepare(
            loaded.controlnets, loaded.pipes.base.unet, request, self.settings,
            job=prepared.job, size=(prepared.width, prepared.height),
            model_name=loaded.source.name, model_arch=loaded.arch,
            device=loaded.choice.device, dtype=loaded.choice.dtype,
            offloaded=loaded.offloaded)
        return ([conditioning] if conditioning is not None else []), titles

    def _model_sha(self, loaded: _Loaded) -> str:
        if loaded.sha256 is None:
            try:
                loaded.sha256 = hashing.model_sha256(loaded.source.path)
            except OSError:
                loaded.sha256 = ""
        return loaded.sha256

    # ----------------------------------------------------------------------- generate
    def generate(self, request: GenerationRequest, on_event: EventCallback = ignore_event,
                 cancel: CancelToken | None = None) -> list[ImageReady]:
        """Run ``request``: every image of every run. See docs/architecture.md."""
        cancel = cancel or CancelToken()
        request = request.validated()
        if request.hires and request.init_image:  # txt2img only, as in A1111: not run
            request = request.replace(hires=False)
        prompt, specs = request.prompt_loras()
        prepared = self._prepare_inputs(request)  # images checked before any allocation
        self._check_strength(request, prepared)
        cancel.raise_if_cancelled()
        self._trim_cache()
        if self._model is None or self._model.key != self._ref_key(request.model):
            self.load(request.model, on_event, cancel)
        loaded = self._model
        assert loaded is not None
        self._threads.start()
        try:
            with cpu_attention.installed(loaded.accel.cpu_attention):
                return self._generate(loaded, request, prompt, specs, prepared, on_event,
                                      cancel)
        except SDStudioError:
            raise
        except Exception as exc:
            if devices.is_out_of_memory(exc):
                devices.free_device_memory(loaded.choice.device)
                raise OutOfMemoryError(
                    f"out of memory on {loaded.choice.name} at {request.width}x{request.height}"
                    f" with {request.batch_size} image(s) per run, even with every memory saver: "
                    "lower the size or images per run", str(exc)) from None
            raise

    def _prepare_inputs(self, request: GenerationRequest) -> _Prepared:
        image, job = img.request_inputs(request)
        width, height = image.size if image is not None else (request.width, request.height)
        return _Prepared(request.mode, image=image, job=job, width=width, height=height)

    @staticmethod
    def _check_strength(request: GenerationRequest, prepared: _Prepared) -> None:
        image_mode = prepared.mode is not Mode.TXT2IMG
        problem = steps_problem(request.sampler, request.schedule_type, request.steps,
                                request.strength if image_mode else None)
        if problem:
            raise RequestError("strength" if image_mode else "steps", problem)

    def _generate(self, loaded: _Loaded, request: GenerationRequest, prompt: str,
                  specs: tuple[LoraSpec, ...], prepared: _Prepared, on_event: EventCallback,
                  cancel: CancelToken) -> list[ImageReady]:
        choice = loaded.choice
        pipe = loaded.pipes.get(prepared.mode)
        lora_hashes = self._apply_loras(loaded, specs)
        embedding_notes = self._apply_embeddings(loaded, on_event)
        ti_hashes = (lora.embedding_hashes(loaded.pipes.base, (prompt, request.negative_prompt))
                     if paths.search_dirs("embedding", self.settings) else {})  # "TI hashes"
        self._apply_vae(loaded, request.vae)
        extras, control_titles = self._apply_ip_adapters(loaded, request, prepared)
        addon_bytes = loaded.ip_adapters.nbytes if loaded.ip_adapters is not None else 0
        control_extras, controlnet_titles = self._apply_controlnets(loaded, request, prepared)
        extras, control_titles = [*extras, *control_extras], {**control_titles,
                                                              **controlnet_titles}
        addon_bytes += loaded.controlnets.nbytes if loaded.controlnets is not None else 0
        plan = self._plan(choice, loaded.model_bytes + addon_bytes,
                          *memory_size(request, prepared.width, prepared.height),
                          request.batch_size, resident=not loaded.offloaded)
        self._apply_memory(loaded, pipe, plan)
        scheduler = self._scheduler(loaded, request.sampler, request.schedule_type)
        strength = None if prepared.mode is Mode.TXT2IMG else request.strength
        sched_info = scheduler_info(scheduler, request.sampler, request.steps, strength)
        first_seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
        seeds = request.seeds(first_seed)
        subseeds = request.variation_seeds()
        # _execution_device walks every module; only needed when offload hooks move them
        device = pipe._execution_device if loaded.offloaded else choice.device
        encoded = encode_prompts(pipe, prompt, request.negative_prompt,
                                 clip_skip=request.clip_skip, emphasis=request.emphasis,
                                 device=device, arch=loaded.arch)
        notes = [*loaded.notes, *embedding_notes, *encoded.notes]
        hires = HiresPass.create(self, loaded, request, scheduler, encoded,
                                 functools.partial(self._scheduler, loaded), extras=extras)
        if self._versions is None:
            self._versions = library_versions()
        base_info = GenerationInfo(
            model_name=loaded.source.name, model_sha256=self._model_sha(loaded),
            model_arch=loaded.arch, model_untrained=loaded.source.untrained,
            vae_name=loaded.vae_name, vae_sha256=loaded.vae_sha256, lora_hashes=lora_hashes,
            ti_hashes=ti_hashes, control_models=control_titles,
            device=choice.name, dtype=choice.label, memory=plan.to_dict(),
            scheduler=sched_info, versions=dict(self._versions),
            prompt_tokens=encoded.prompt_tokens, negative_tokens=encoded.negative_tokens,
        )
        results: list[ImageReady] = []
        runs = request.batch_count
        memory = _MemoryState(plan)
        previewer = self.previewer(loaded, on_event)
        for run in range(runs):
            cancel.raise_if_cancelled()
            run_started = time.perf_counter()
            run_slice = slice(run * request.batch_size, (run + 1) * request.batch_size)
            run_seeds = seeds[run_slice]
            variation = Variation(tuple(subseeds[run_slice]), request.variation_strength,
                                  request.seed_resize_from_w, request.seed_resize_from_h)

            def denoise(run: int = run, run_seeds: list[int] = run_seeds,
                        variation: Variation = variation) -> torch.Tensor:
                # generators afresh on every try: the same noise as the first try
                device = pipe._execution_device if loaded.offloaded else choice.device
                gens = self._generators(request, run_seeds, device)
                kwargs = self._mode_kwargs(loaded, pipe, request, prepared, gens, device,
                                           variation)
                gens = self._prepare_sampler(scheduler, pipe, request, prepared, gens,
                                             run_seeds, device, variation)
                callback = StepCallback(on_event, cancel, run + 1, runs, loaded.arch,
                                         self.settings.preview_every, choice.device,
                                         previewer=previewer,
                                         **(hires.first_pass_progress() if hires else {}))
                if pipe.scheduler is not scheduler:  # a registered-module write costs ~50 us
                    pipe.scheduler = scheduler
                return self._call(pipe, encoded, request, gens, callback, kwargs, extras)

            latents = self._surviving_oom(loaded, pipe, memory, denoise, on_event)
            cancel.raise_if_cancelled()
            if hires is not None:  # upscale, then image to image at the target size
                latents = hires.run(latents, run=run + 1, runs=runs, seeds=run_seeds,
                                    variation=variation, memory=memory, on_event=on_event,
                                    cancel=cancel)
                cancel.raise_if_cancelled()
            pictures, decode_notes = self._surviving_oom(
                loaded, pipe, memory, functools.partial(decode_latents, pipe, latents), on_event)
            run_notes = (*notes, *memory.notes, *decode_notes, *(hires.notes if hires else ()))
            base_info = _replace_info(base_info, memory=memory.plan.to_dict())
            elapsed = time.perf_counter() - run_started
            for i, picture in enumerate(pictures):
                if prepared.job is not None:
                    picture = img.composite(picture, prepared.job)
                seed = run_seeds[i]
                index = run * request.batch_size + i
                info = _replace_info(base_info, elapsed_s=round(elapsed, 3), notes=run_notes)
                event = ImageReady(
                    index=index, image=picture,
                    request=request.image_request(seed, subseeds[index]),
                    info=info,
                )
                results.append(event)
                on_event(event)
        return results

    @staticmethod
    def _scheduler(loaded: _Loaded, sampler: str, schedule: str) -> A1111Scheduler:
        """The loaded model's scheduler for a sampler + schedule type, built once (the
        pipeline call's set_timesteps resets it)."""
        key = f"{sampler}/{schedule}"
        scheduler = loaded.schedulers.get(key)
        if scheduler is None:
            scheduler = build_scheduler(sampler, loaded.scheduler_config, schedule,
                                        sdxl=loaded.pipes.sdxl)
            loaded.schedulers[key] = scheduler
        return scheduler

    def _surviving_oom(self, loaded: _Loaded, pipe: Any, memory: _MemoryState,
                       attempt: Callable[[], _T], on_event: EventCallback) -> _T:
        """``attempt()``; when the device runs out of memory, free it, turn on the next saver
        (memory.next_fallback) and try the same work again, telling the person; when every
        saver is on, the out-of-memory error goes up."""
        while True:
            try:
                return attempt()
            except SDStudioError:
                raise
            except Exception as exc:
                if not devices.is_out_of_memory(exc):
                    raise
                devices.free_device_memory(loaded.choice.device)
                step = next_fallback(memory.plan, loaded.choice.kind)
                if step is None:
                    raise
                memory.plan, label = step
                self._apply_memory(loaded, pipe, memory.plan)
                note = f"out of memory on {loaded.choice.name}: tried again with {label}"
                memory.notes.append(note)
                on_event(Notice(note))

    @staticmethod
    def _call(pipe: Any, encoded: Any, request: GenerationRequest, gens: list[torch.Generator],
              callback: StepCallback, kwargs: dict[str, Any],
              extras: Sequence[Any] = ()) -> torch.Tensor:
        """One pipeline call (a pass). ``extras``: conditioning attached to the pass (an
        IP-Adapter's :class:`~sdstudio.engine.ip_adapter.IPConditioning`): each gives
        ``pipe_kwargs()`` and is ``active(pipe)`` around the call."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(encoded.masked_attention(pipe.unet, request.batch_size))
            for extra in extras:
                stack.enter_context(extra.active(pipe))
                kwargs = {**kwargs, **extra.pipe_kwargs()}
            return pipe(
                **encoded.pipe_kwargs(),
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                num_images_per_prompt=request.batch_size,
                generator=gens,
                output_type="latent",
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents"],
                **kwargs,
            ).images

    @staticmethod
    def _generators(request: GenerationRequest, seeds: list[int],
                    device: torch.device, offset: int = 0) -> list[torch.Generator]:
        gen_device = "cpu" if request.rng == "cpu" else device
        return [torch.Generator(gen_device).manual_seed(s + offset) for s in seeds]

    def _prepare_sampler(self, scheduler: A1111Scheduler, pipe: Any, request: GenerationRequest,
                         prepared: _Prepared, gens: list[torch.Generator], seeds: list[int],
                         device: torch.device, variation: Variation
                         ) -> list[torch.Generator]:
        """Hand an A1111 sampler its noise (see engine/ksampling.py); returns the generators
        for the pipeline. txt2img: the images' generators, after the initial noise. img2img
        and inpaint: the initial noise is drawn first from them, as A1111 draws it, and the
        pipeline gets generators of their own (seed + 2^32) for the VAE's posterior sample,
        which A1111 draws from torch's global RNG."""
        if prepared.mode is Mode.TXT2IMG:
            scheduler.prepare(gens, seeds)
            return gens
        noise = initial_latents(pipe, gens, prepared.width, prepared.height, device, variation)
        repaint = fill = None
        if prepared.mode is Mode.INPAINT:
            assert prepared.job is not None
            mask = latent_mask(prepared.job.mask, noise)
            repaint = None if _nine_channel(pipe) else mask
            fill = masked_init_latents(  # A1111's "latent noise": the seed's first draw
                request.masked_content, mask, initial_latents(
                    pipe, self._generators(request, seeds, device), prepared.width,
                    prepared.height, device) if request.masked_content == "latent noise"
                else None)
        scheduler.prepare(gens, seeds, strength=a1111_strength(request.strength), noise=noise,
                          repaint=repaint, init_latents=fill)
        return self._generators(request, seeds, device, offset=1 << 32)

    def _mode_kwargs(self, loaded: _Loaded, pipe: Any, request: GenerationRequest,
                     prepared: _Prepared, gens: list[torch.Generator],
                     device: torch.device, variation: Variation | None = None
                     ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"height": prepared.height, "width": prepared.width}
        inpaint_pipe = loaded.pipes.class_for(prepared.mode) is loaded.pipes.class_for(
            Mode.INPAINT) and (loaded.pipes.inpaint_unet or prepared.mode is Mode.INPAINT)
        if prepared.mode is Mode.TXT2IMG:
            kwargs["latents"] = initial_latents(pipe, gens, request.width, request.height,
                                                device, variation)
            if inpaint_pipe:  # 9-channel UNet: inpaint a blank image under a full mask
                kwargs["image"] = Image.new("RGB", (request.width, request.height),
                                            (127, 127, 127))
                kwargs["mask_image"] = Image.new("L", (request.width, request.height), 255)
                kwargs["strength"] = 1.0
            return kwargs
        kwargs["strength"] = a1111_strength(request.strength)
        kwargs["image"] = prepared.image
        if prepared.mode is Mode.IMG2IMG:
            if inpaint_pipe:
                kwargs["mask_image"] = Image.new("L", (request.width, request.height), 255)
            else:
                del kwargs["height"], kwargs["width"]
            return kwargs
        assert prepared.job is not None
        if _nine_channel(pipe):
            kwargs["mask_image"] = prepared.job.mask
        else:  # the sampler blends as A1111 (A1111Scheduler.prepare): the pipeline must not
            kwargs["mask_image"] = Image.new("L", (prepared.width, prepared.height), 255)
        return kwargs


def a1111_strength(strength: float) -> float:
    """A1111 runs at most ``int(0.999 * steps)`` image-to-image steps: a strength of 1 still
    starts from the source plus the first sigma's noise (not from noise alone)."""
    return min(float(strength), 0.999)


def _nine_channel(pipe: Any) -> bool:
    return int(pipe.unet.config.in_channels) == 9


def latent_mask(mask: Image.Image, like: torch.Tensor) -> torch.Tensor:
    """A1111's latent inpaint mask (``processing.py``, ``latmask``): the blurred mask as RGB
    resized to the latent size (PIL's default filter), its first channel rounded to 0/1; one
    per image and latent channel. 1 = repaint."""
    batch, channels, height, width = like.shape
    small = mask.convert("RGB").resize((width, height))
    rounded = np.around(np.asarray(small, dtype=np.float32)[..., 0] / 255.0)
    one = torch.from_numpy(rounded).to(device=like.device, dtype=torch.float32)
    return one.expand(batch, channels, height, width).clone()


def _replace_info(info: GenerationInfo, **changes: Any) -> GenerationInfo:
    import dataclasses

    return dataclasses.replace(info, **changes)
