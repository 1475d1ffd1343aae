"""A1111's latent "masked content" modes: what the init latents hold under the mask.

AUTOMATIC1111 (``StableDiffusionProcessingImg2Img.init``) encodes the (filled) source, then
with its latent mask (the blurred mask resized to the latent size, rounded: 1 = repaint):

- ``latent noise``: ``init * (1 - mask) + noise * mask``, the noise being the image seed's
  first draw at the latent size (``create_random_tensors``);
- ``latent nothing``: ``init * (1 - mask)``;
- ``fill`` and ``original`` leave the latents as encoded (fill changed the image instead).

The sampler then noises these latents as for any image to image. ``init_latents`` is the
function the engine hands :class:`~sdstudio.engine.ksampling.A1111Scheduler` (``prepare``'s
``init_latents``), which applies it to the encoded source the pipeline passes to
``add_noise``: the same for ordinary (4-channel) and inpainting (9-channel) models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LATENT_MODES = ("latent noise", "latent nothing")

InitLatents = Callable[[torch.Tensor], torch.Tensor]


def masked_init(init: torch.Tensor, repaint: torch.Tensor, mode: str,
                noise: torch.Tensor | None = None) -> torch.Tensor:
    """The init latents for ``mode`` given the latent mask ``repaint`` (1 = repaint, the
    latents' shape or broadcastable) and, for latent noise, the seed's ``noise``."""
    if mode not in LATENT_MODES:
        return init
    repaint = repaint.to(device=init.device, dtype=init.dtype)
    kept = init * (1 - repaint)
    if mode == "latent nothing":
        return kept
    if noise is None:
        raise ValueError("latent noise needs the seed's noise")
    return kept + noise.to(device=init.device, dtype=init.dtype) * repaint


def init_latents(mode: str, repaint: torch.Tensor,
                 noise: torch.Tensor | None = None) -> InitLatents | None:
    """The scheduler's hook for ``mode``, or None when the encoded latents stay as they are."""
    if mode not in LATENT_MODES:
        return None

    def apply(init: torch.Tensor) -> torch.Tensor:
        mask, seed_noise = repaint, noise
        if mask.shape[0] != init.shape[0]:  # the pipeline may repeat the batch
            mask = mask.repeat(init.shape[0] // mask.shape[0], 1, 1, 1)
            if seed_noise is not None:
                seed_noise = seed_noise.repeat(init.shape[0] // seed_noise.shape[0], 1, 1, 1)
        return masked_init(init, mask, mode, seed_noise)

    return apply
