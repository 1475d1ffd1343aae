"""The hires fix's second pass, as AUTOMATIC1111 runs it (``processing.py``,
``StableDiffusionProcessingTxt2Img.sample_hr_pass``).

The runner makes the first image at the request's size; :class:`HiresPass` then

1. upscales it to the target (:func:`sdstudio.core.hires.hires_target`): a latent mode
   ("Latent", "Latent (nearest)", ...) interpolates the first pass's latent with
   ``torch.nn.functional.interpolate`` (the mode and antialias of
   :data:`sdstudio.core.upscalers.LATENT_UPSCALE_MODES`); any other upscaler decodes it,
   upscales the pixels (:func:`sdstudio.engine.upscale.upscale_image`) and the image-to-image
   pipeline encodes them again; the target's crop (both resize sides given) is taken after;
2. draws the second pass's noise as A1111 does: a fresh ``ImageRNG`` of the images' seeds
   (variation seeds and seed resize included) at the target's latent size, the step noise
   continuing those generators;
3. runs image to image on the SAME loaded components (the pipeline set's image-to-image
   pipeline: no reload), with the hires sampler, schedule type and prompts, at A1111's hires
   steps (``setup_img2img_steps`` with the steps given: the last ``hires_steps`` of a
   schedule of ``int(hires_steps / min(denoising, 0.999))``).

Progress counts both passes (``Progress.phase``: "first pass", "hires"); cancel works in
either (the step callback's CancelledError). An inpainting (9-channel) model is refused for
the hires fix with one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from sdstudio.core import hires as plan
from sdstudio.core import upscalers as names
from sdstudio.core.cancel import CancelToken
from sdstudio.core.errors import RequestError
from sdstudio.core.events import EventCallback
from sdstudio.core.fields import Mode
from sdstudio.core.request import GenerationRequest
from sdstudio.core.tokens import strip_lora_tags
from sdstudio.engine.ksampling import A1111Scheduler
from sdstudio.engine.latents import StepCallback, Variation, decode_latents, initial_latents
from sdstudio.engine.text import encode_prompts

FIRST_PASS = "first pass"
HIRES = "hires"


def memory_size(request: GenerationRequest, width: int, height: int) -> tuple[int, int]:
    """The size the memory policy decides for: the larger of the hires target and the first
    pass when a hires pass runs, else ``width`` x ``height``."""
    if not plan.runs_hires(request):
        return width, height
    return plan.largest_size(request)


def upscale_latents(latents: torch.Tensor, target: plan.HiresTarget,
                    mode: names.LatentMode) -> torch.Tensor:
    """A1111's latent upscale: ``interpolate(samples, size=(up_h // 8, up_w // 8), mode=,
    antialias=)``, then the target's crop. Computed in fp32, returned in the latents'
    dtype."""
    size = (target.upscale_h // plan.LATENT_FACTOR, target.upscale_w // plan.LATENT_FACTOR)
    up = torch.nn.functional.interpolate(latents.float(), size=size, mode=mode.mode,
                                         antialias=mode.antialias)
    left, top, right, bottom = target.crop_box()
    return up[:, :, top:bottom, left:right].to(latents.dtype)


def crop_pixels(image: Image.Image, target: plan.HiresTarget) -> Image.Image:
    """The target's crop of an image upscaled to ``upscale_w`` x ``upscale_h``: the latent
    crop of :func:`upscale_latents` in pixels (whole latent cells)."""
    left, top, _, _ = target.crop_box()
    x, y = left * plan.LATENT_FACTOR, top * plan.LATENT_FACTOR
    return image.crop((x, y, x + target.width, y + target.height))


@dataclass
class HiresPass:
    """The second pass of one request (built once per job, run once per run)."""

    engine: Any  # the runner's Engine (its generators, pipeline call and OOM fallbacks)
    loaded: Any  # the runner's _Loaded
    request: GenerationRequest
    pipe: Any  # the image-to-image pipeline on the loaded components
    scheduler: A1111Scheduler
    target: plan.HiresTarget
    steps: int  # the schedule's length
    t_enc: int
    strength: float
    evaluations: int  # model evaluations of the second pass (its progress steps)
    first_evaluations: int
    encoded: Any
    latent_mode: names.LatentMode | None
    dirs: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    extras: tuple[Any, ...] = ()  # the first pass's conditioning extras (IP-Adapter)

    @classmethod
    def create(cls, engine: Any, loaded: Any, request: GenerationRequest,
               first_scheduler: A1111Scheduler, encoded: Any,
               scheduler_for: Callable[[str, str], A1111Scheduler],
               extras: Sequence[Any] = ()) -> HiresPass | None:
        """The second pass of ``request``, or None when it runs none. Checks what it can
        before the first pass runs (RequestError / ModelError): the upscaler's name, the
        model kind, the steps the hires sampler can run."""
        if not plan.runs_hires(request):
            return None
        pipe = loaded.pipes.get(Mode.IMG2IMG)  # the same components
        if int(pipe.unet.config.in_channels) == 9:
            raise RequestError("hires", "the hires fix runs with an ordinary model; "
                               f"{loaded.source.name} is an inpainting model")
        upscaler = names.normalise(request.hires_upscaler)
        latent_mode = names.LATENT_UPSCALE_MODES.get(upscaler)
        dirs: tuple[str, ...] = ()
        if latent_mode is None and names.kind_of(upscaler) == "model":
            from sdstudio.engine.upscale import resolve_upscaler, upscaler_dirs

            dirs = tuple(upscaler_dirs(engine.settings))
            resolve_upscaler(upscaler, dirs)  # an unknown name: one line, before any work
        sampler, schedule = plan.hires_sampler(request)
        scheduler = scheduler_for(sampler, schedule)
        steps, t_enc = plan.second_pass_steps(request.steps, request.hires_steps,
                                              request.hires_denoising)
        strength = min(request.hires_denoising, 0.999)
        try:
            evaluations = len(scheduler.plan(steps, strength, t_enc)) if steps else 0
        except (ValueError, ZeroDivisionError, IndexError):
            evaluations = 0
        if evaluations < 1:
            raise RequestError("hires_steps", f"the hires pass runs no step of {sampler}: "
                               f"{t_enc + 1} step(s) at denoising {request.hires_denoising:g} "
                               f"({steps} in the schedule); change the hires steps or the "
                               "denoising strength")
        prompt, negative = plan.hires_prompts(request)
        if (prompt, negative) != (request.prompt, request.negative_prompt):
            device = pipe._execution_device if loaded.offloaded else loaded.choice.device
            encoded = encode_prompts(pipe, strip_lora_tags(prompt), negative,
                                     clip_skip=request.clip_skip, emphasis=request.emphasis,
                                     device=device, arch=loaded.arch)
        return cls(engine=engine, loaded=loaded, request=request, pipe=pipe,
                   scheduler=scheduler, target=plan.request_target(request), steps=steps,
                   t_enc=t_enc, strength=strength, evaluations=evaluations,
                   first_evaluations=len(first_scheduler.plan(request.steps)),
                   encoded=encoded, latent_mode=latent_mode, dirs=dirs,
                   notes=[plan.describe(request)], extras=tuple(extras))

    def first_pass_progress(self) -> dict[str, Any]:
        """StepCallback options of the first pass: its steps, then the hires pass's."""
        return {"phase": FIRST_PASS, "after": self.evaluations}

    # ------------------------------------------------------------------------- running
    def run(self, latents: torch.Tensor, *, run: int, runs: int, seeds: list[int],
            variation: Variation, memory: Any, on_event: EventCallback,
            cancel: CancelToken) -> torch.Tensor:
        """The second pass from the first pass's ``latents``: the target's latents."""
        engine, loaded = self.engine, self.loaded
        image: Any
        if self.latent_mode is not None:
            image = upscale_latents(latents, self.target, self.latent_mode)
        else:
            image = self._upscaled_pixels(latents, memory, on_event, cancel)
        cancel.raise_if_cancelled()
        request = self.request.replace(steps=self.steps, width=self.target.width,
                                       height=self.target.height)

        def attempt() -> torch.Tensor:
            device = self.pipe._execution_device if loaded.offloaded else loaded.choice.device
            gens = engine._generators(request, seeds, device)
            noise = initial_latents(self.pipe, gens, self.target.width, self.target.height,
                                    device, variation)
            self.scheduler.prepare(gens, seeds, strength=self.strength, noise=noise,
                                   t_enc=self.t_enc)
            vae_gens = engine._generators(request, seeds, device, offset=1 << 32)
            callback = StepCallback(on_event, cancel, run, runs, loaded.arch,
                                    engine.settings.preview_every, loaded.choice.device,
                                    phase=HIRES, before=self.first_evaluations,
                                    previewer=engine.previewer(loaded, on_event))
            if self.pipe.scheduler is not self.scheduler:
                self.pipe.scheduler = self.scheduler
            kwargs = {"image": image, "strength": 1.0}
            result: torch.Tensor = engine._call(self.pipe, self.encoded, request, vae_gens,
                                                callback, kwargs, self.extras)
            return result

        out: torch.Tensor = engine._surviving_oom(loaded, self.pipe, memory, attempt, on_event)
        return out

    def _upscaled_pixels(self, latents: torch.Tensor, memory: Any, on_event: EventCallback,
                         cancel: CancelToken) -> list[Image.Image]:
        from sdstudio.engine.upscale import describe_loaded, loaded_upscaler, upscale_image

        engine, loaded = self.engine, self.loaded
        pictures, decode_notes = engine._surviving_oom(
            loaded, self.pipe, memory, functools.partial(decode_latents, self.pipe, latents),
            on_event)
        size = (self.target.upscale_w, self.target.upscale_h)
        out = []
        for picture in pictures:
            cancel.raise_if_cancelled()
            big = upscale_image(picture, self.request.hires_upscaler, size=size,
                                dirs=self.dirs, device=loaded.choice.device, cancel=cancel)
            out.append(crop_pixels(big.convert("RGB"), self.target))
        model = loaded_upscaler() if self.dirs else None
        extra = [f"hires upscaler: {describe_loaded(model)}"] if model is not None else []
        for note in (*decode_notes, *extra):
            if note not in self.notes:
                self.notes.append(note)
        return out
