"""The pipeline's step and latent ends: the per-step callback (cancel, Progress, Preview),
the initial noise, and the VAE decode to PIL images (with the fp16/bf16 NaN retry)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.core.cancel import CancelToken
from sdstudio.core.events import EventCallback, Preview, Progress
from sdstudio.engine import device as devices
from sdstudio.engine import threads as cpu_threads
from sdstudio.engine.pipelines import module_dtype
from sdstudio.engine.preview import latents_to_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variation:
    """A1111's variation seeds and seed resize for one run: per image a variation seed, the
    strength its noise is blended in with, and the size the noise is made at (0 = the
    image's size)."""

    seeds: tuple[int, ...] = ()
    strength: float = 0.0
    resize_w: int = 0
    resize_h: int = 0

    @property
    def active(self) -> bool:
        return self.strength > 0 or (self.resize_w > 0 and self.resize_h > 0)


def initial_latents(pipe: Any, gens: list[torch.Generator], width: int, height: int,
                    device: torch.device, variation: Variation | None = None) -> torch.Tensor:
    """One latent per generator, drawn in fp32 on the generator's device (the CPU by default:
    the same noise on every machine), then moved to the pipeline's device and dtype. Each
    generator draws exactly one latent-sized noise, so later step noise continues it."""
    channels = int(pipe.vae.config.latent_channels)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    shape = (channels, height // factor, width // factor)
    variation = variation or Variation()
    noise = [image_noise(g, shape, i, variation, factor) for i, g in enumerate(gens)]
    return torch.stack(noise).to(device=device, dtype=module_dtype(pipe.unet))


def image_noise(gen: torch.Generator, shape: tuple[int, int, int], index: int,
                variation: Variation, factor: int = 8) -> torch.Tensor:
    """One image's initial noise (C, H, W) as AUTOMATIC1111 makes it (``modules/rng.py``,
    ``ImageRNG.first``): the seed's noise, slerped towards the variation seed's by the
    strength; with seed resize, made at the other size and pasted centred into noise of this
    size. ``gen`` (seeded with the image's seed) draws one full-size noise either way."""
    if not variation.active:
        return _randn(shape, gen)
    resized = variation.resize_w > 0 and variation.resize_h > 0
    noise_shape = ((shape[0], variation.resize_h // factor, variation.resize_w // factor)
                   if resized else shape)
    resized = resized and noise_shape != shape
    if resized:  # the seed's noise at the other size, from a fresh generator of that seed
        fresh = torch.Generator(gen.device).manual_seed(gen.initial_seed())
        noise = _randn(noise_shape, fresh)
    else:
        noise = _randn(shape, gen)
    if variation.strength > 0:
        seeds = variation.seeds
        sub = seeds[index] if index < len(seeds) else 0
        sub_noise = _randn(noise_shape, torch.Generator(gen.device).manual_seed(int(sub)))
        noise = slerp(variation.strength, noise, sub_noise)
    if not resized:
        return noise
    full = _randn(shape, gen)
    return paste_centred(full, noise)


def _randn(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float32)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical blend from ``low`` (strength 0) to ``high`` (strength 1) along dim 1 of a
    (C, H, W) noise, as A1111 blends a seed with its variation seed (nearly parallel noises
    are blended linearly)."""
    low_unit = low / torch.linalg.vector_norm(low, dim=1, keepdim=True)
    high_unit = high / torch.linalg.vector_norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return ((torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low
            + (torch.sin(strength * omega) / so).unsqueeze(1) * high)


def paste_centred(target: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """``patch`` (C, h, w) centred on ``target`` (C, H, W); cropped where it is larger."""
    dy = (target.shape[1] - patch.shape[1]) // 2
    dx = (target.shape[2] - patch.shape[2]) // 2
    h = patch.shape[1] if dy >= 0 else patch.shape[1] + 2 * dy
    w = patch.shape[2] if dx >= 0 else patch.shape[2] + 2 * dx
    ty, tx = max(dy, 0), max(dx, 0)
    sy, sx = max(-dy, 0), max(-dx, 0)
    out = target.clone()
    out[:, ty:ty + h, tx:tx + w] = patch[:, sy:sy + h, sx:sx + w]
    return out


def decode_latents(pipe: Any, latents: torch.Tensor) -> tuple[list[Image.Image], list[str]]:
    """VAE decode to PIL images, as the diffusers pipelines do it (SDXL's fp32 upcast
    included); an fp16 or bf16 decode that gives NaN or inf is redone in fp32, with a note."""
    vae = pipe.vae
    notes: list[str] = []
    vae_dtype = module_dtype(vae)  # read once: see module_dtype
    force_upcast = vae_dtype == torch.float16 and bool(getattr(vae.config, "force_upcast",
                                                               False))
    sdxl = getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__

    def run(dtype: torch.dtype) -> torch.Tensor:
        if dtype != vae_dtype:
            vae.to(dtype=dtype)
        try:
            z = latents.to(dtype=dtype)
            mean = getattr(vae.config, "latents_mean", None)
            std = getattr(vae.config, "latents_std", None)
            if mean is not None and std is not None:
                m = torch.tensor(mean).view(1, -1, 1, 1).to(z.device, z.dtype)
                s = torch.tensor(std).view(1, -1, 1, 1).to(z.device, z.dtype)
                z = z * s / vae.config.scaling_factor + m
            else:
                z = z / vae.config.scaling_factor
                shift = getattr(vae.config, "shift_factor", None)
                if shift:
                    z = z + shift
            with torch.no_grad():
                return vae.decode(z, return_dict=False)[0]
        finally:
            if dtype != vae_dtype:
                vae.to(dtype=vae_dtype)

    decoded = run(torch.float32 if (force_upcast and sdxl) else vae_dtype)
    # NaN/inf check for half-precision decodes: one reduction (an fp32-accumulated sum, which
    # any NaN or inf turns non-finite; |pixels| <= ~1 so it cannot overflow) and one sync.
    if decoded.dtype != torch.float32 and not torch.isfinite(
            decoded.sum(dtype=torch.float32)).item():
        name = devices.DTYPE_NAMES.get(decoded.dtype, str(decoded.dtype))
        decoded = run(torch.float32)
        notes.append(f"the {name} VAE decoded to NaN; decoded again in fp32")
    array = pipe.image_processor.postprocess(decoded, output_type="np")
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array], notes


class StepCallback:
    """``callback_on_step_end``: cancel check, Progress, Preview every N steps.

    A run of several passes (the hires fix) counts its steps across them: ``before`` steps
    came before this pass, ``after`` come after it, and ``phase`` names the pass in the
    Progress events ("" for a single pass)."""

    def __init__(self, on_event: EventCallback, cancel: CancelToken, run: int, runs: int,
                 arch: str, preview_every: int, device: Any = None, *, phase: str = "",
                 before: int = 0, after: int = 0,
                 previewer: Callable[[torch.Tensor], Image.Image] | None = None) -> None:
        self.phase, self.before, self.after = phase, before, after
        self.previewer = previewer  # a TAESD decoder (engine/taesd.py); None: the linear map
        self.on_event = on_event
        self.cancel = cancel
        self.run = run
        self.runs = runs
        self.arch = arch
        self.preview_every = max(0, int(preview_every))
        self.started = time.perf_counter()
        self.last = self.started
        self.device = device  # for the VRAM figures (None off CUDA)

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.cancel.raise_if_cancelled()
        cpu_threads.governor().tick()  # fewer CPU threads while other programs keep CPUs busy
        now = time.perf_counter()
        own = max(int(getattr(pipe, "num_timesteps", 0) or 0), i + 1)
        own_step = min(i + 1, own)
        step, total = self.before + own_step, self.before + own + self.after
        self.on_event(Progress(step, total, self.run, self.runs,
                               elapsed_s=now - self.started, s_per_it=now - self.last,
                               vram=devices.vram_usage(self.device), phase=self.phase,
                               phase_step=own_step if self.phase else 0,
                               phase_total=own if self.phase else 0))
        self.last = now
        if self.preview_every and own_step % self.preview_every == 0 and "latents" in kwargs:
            self.on_event(Preview(step, total, self._preview(kwargs["latents"])))
        return kwargs

    def _preview(self, latents: torch.Tensor) -> Image.Image:
        if self.previewer is not None:
            try:
                return self.previewer(latents)
            except Exception:  # out of memory, say: the linear map for the rest of the run
                log.warning("TAESD preview failed; linear previews for this run", exc_info=True)
                self.previewer = None
        return latents_to_rgb(latents, self.arch)

