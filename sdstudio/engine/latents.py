"""The pipeline's step and latent ends: the per-step callback (cancel, Progress, Preview),
the initial noise, and the VAE decode to PIL images (with the fp16 NaN retry)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdstudio.core.cancel import CancelToken
from sdstudio.core.events import EventCallback, Preview, Progress
from sdstudio.engine import device as devices
from sdstudio.engine.pipelines import module_dtype
from sdstudio.engine.preview import latents_to_rgb


def initial_latents(pipe: Any, gens: list[torch.Generator], width: int, height: int,
                    device: torch.device) -> torch.Tensor:
    """One latent per generator, drawn in fp32 on the generator's device (the CPU by default:
    the same noise on every machine), then moved to the pipeline's device and dtype."""
    channels = int(pipe.vae.config.latent_channels)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    shape = (1, channels, height // factor, width // factor)
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in gens]
    return torch.cat(noise).to(device=device, dtype=module_dtype(pipe.unet))


def decode_latents(pipe: Any, latents: torch.Tensor) -> tuple[list[Image.Image], list[str]]:
    """VAE decode to PIL images, as the diffusers pipelines do it (SDXL's fp32 upcast
    included); an fp16 decode that gives NaN is redone in fp32, with a note."""
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
        decoded = run(torch.float32)
        notes.append("the fp16 VAE decoded to NaN; decoded again in fp32")
    array = pipe.image_processor.postprocess(decoded, output_type="np")
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array], notes


class StepCallback:
    """``callback_on_step_end``: cancel check, Progress, Preview every N steps."""

    def __init__(self, on_event: EventCallback, cancel: CancelToken, run: int, runs: int,
                 arch: str, preview_every: int, device: Any = None) -> None:
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
        now = time.perf_counter()
        total = max(int(getattr(pipe, "num_timesteps", 0) or 0), i + 1)
        step = min(i + 1, total)
        self.on_event(Progress(step, total, self.run, self.runs,
                               elapsed_s=now - self.started, s_per_it=now - self.last,
                               vram=devices.vram_usage(self.device)))
        self.last = now
        if self.preview_every and step % self.preview_every == 0 and "latents" in kwargs:
            self.on_event(Preview(step, total, latents_to_rgb(kwargs["latents"], self.arch)))
        return kwargs

